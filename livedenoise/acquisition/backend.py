"""The interface a live session needs from acquisition software (pycromanager or pymmcore-plus).

The live session only speaks this interface, so the same session logic runs on the simulated core, a
pymmcore core with real device adapters, a running Micro-Manager (Java backend), or a pymmcore-plus
MDA. Frames reach ``on_frame(image, axes)`` from the library's own thread *after* nothing but a
reference is taken: the raw image is saved by the library exactly as acquired.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedenoise.acquisition.plans import CalibrationPair, Illumination, LivePlan, PairPlan

FrameCallback = Callable[[np.ndarray, dict], None]


#: Why pairs-mode calibration cannot run without an XY stage, in one sentence.
NO_XY_STAGE = ("pairs-mode calibration images fields beside the current one, and this microscope has no XY stage "
               "that livedenoise can read: configure one in Micro-Manager, or use [live] mode = 'self'")

#: Calibration field spacing when neither ``[live] position_spacing_um`` nor the pixel size is known.
FALLBACK_SPACING_UM = 60.0


@dataclass
class LiveRunInfo:
    frames: int
    seconds: float
    raw_path: Path | None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class AcquisitionBackend(ABC):
    """Acquisition operations a session uses; implementations wrap one acquisition library."""

    name: str = "backend"

    @abstractmethod
    def acquire_pairs(self, plan: PairPlan, directory: Path) -> list[CalibrationPair]:
        """Acquire (and save under ``directory``) the calibration pairs of ``plan``."""

    @abstractmethod
    def run_live(self, plan: LivePlan, on_frame: FrameCallback, stop: threading.Event, directory: Path,
                 max_frames: int | None = None) -> LiveRunInfo:
        """Acquire frames until ``stop`` is set (or ``max_frames``), saving raw under ``directory``; blocks."""

    @abstractmethod
    def read_raw(self, axes: dict) -> np.ndarray:
        """Read a saved raw frame of the current/last live run back from disk."""

    def spread_positions(self, count: int, spacing_um: float) -> list[tuple[float, float]]:
        """``count`` stage positions on a square grid ``spacing_um`` apart, around the current position."""
        x0, y0 = self.current_xy()
        cols = int(np.ceil(np.sqrt(count)))
        return [(x0 + (i % cols) * spacing_um, y0 + (i // cols) * spacing_um) for i in range(count)]

    def current_xy(self) -> tuple[float, float]:
        return 0.0, 0.0

    def _core_value(self, method: str) -> float:
        """A number from the microscope's core, by Micro-Manager's camelCase call name (backends with a core)."""
        raise NotImplementedError(f"{self.name} has no Micro-Manager core to ask for {method}")

    def field_of_view_um(self) -> tuple[float, float] | None:
        """The camera's field of view (width, height) in µm at the current pixel size, or ``None`` when the
        microscope does not say (no core, or no pixel size calibrated)."""
        try:
            px, w, h = (self._core_value(m) for m in ("getPixelSizeUm", "getImageWidth", "getImageHeight"))
        except Exception:  # noqa: BLE001 - no core, no pixel size configured, or a core without these calls
            return None
        return (px * w, px * h) if px > 0 and w > 0 and h > 0 else None

    def calibration_spacing_um(self, spacing_um: float | None) -> tuple[float, str]:
        """The distance between calibration fields and where it came from: ``spacing_um`` when given, else the
        field of view's larger side plus 10 % (fields that overlap share structure, which would let the fine-tune
        see its held-out field and the fixed-pattern estimate mistake the sample for the camera), else
        ``FALLBACK_SPACING_UM``."""
        if spacing_um is not None:
            return float(spacing_um), "[live] position_spacing_um"
        fov = self.field_of_view_um()
        if fov is not None:
            return 1.1 * max(fov), f"the field of view ({fov[0]:.0f} x {fov[1]:.0f} µm) plus 10 %"
        return FALLBACK_SPACING_UM, ("no pixel size known: the default; set [live] position_spacing_um above the "
                                     "field of view's width")

    @property
    def controls_light(self) -> bool:
        """Whether livedenoise can set the light power here (a light control was given to the backend)."""
        return False

    def current_illumination(self) -> Illumination | None:
        """The microscope's own live illumination (its exposure; power ``None``: the light is left as it is), or
        ``None`` when the backend cannot tell: a session then needs ``[live]`` exposure_ms.
        ``[live]`` exposure_ms / light_power, where set, take precedence (:meth:`LiveSession._low`).
        """
        return None

    def ground_truth(self, image: np.ndarray) -> np.ndarray | None:
        """The noise-free image behind ``image`` when the microscope is simulated, else ``None``."""
        return None

    def describe(self) -> str:
        return self.name
