"""What to acquire: calibration pairs and the live series, independent of the acquisition library."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Illumination:
    """Exposure (ms) and light power (percent, ``None`` = leave the light source as it is)."""

    exposure_ms: float
    power: float | None = None


@dataclass(frozen=True)
class PairPlan:
    """Calibration pairs: at each stage position a low-SNR frame (the live settings) and a high-SNR reference."""

    positions: list[tuple[float, float]]
    low: Illumination
    high: Illumination
    reference: Literal["exposure", "power", "average"] = "exposure"
    average: int = 16


@dataclass(frozen=True)
class LivePlan:
    """The live series: illumination, minimum interval between frames, and the stage position."""

    illumination: Illumination
    interval_ms: float = 0.0
    position: tuple[float, float] | None = None


@dataclass
class CalibrationPair:
    """A low-SNR frame and its high-SNR reference at one position (raw camera values)."""

    position: int
    low: np.ndarray
    high: np.ndarray
    info: dict = field(default_factory=dict)
    #: the first reference frames as acquired, when they were taken at the live settings (``reference =
    #: "average"``): with ``low`` they are consecutive live-like frames of the field, so a temporal model's live
    #: output can be scored on them (against the mean of the *other* reference frames, :meth:`sequence_and_rest`)
    head: list[np.ndarray] = field(default_factory=list)

    def sequence_and_rest(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(``[low, *head]`` as a [T, H, W] sequence, the mean of the reference frames not in it), or None without
        a head. The two share no frame, so their noise is independent (what :func:`held_out_mse` needs)."""
        n = int(self.info.get("reference_frames", 0))
        if not self.head or n - len(self.head) < 2:
            return None
        rest = (n * self.high.astype(np.float64) - np.sum(np.stack(self.head).astype(np.float64), axis=0)) \
            / (n - len(self.head))
        return np.stack([self.low, *self.head]).astype(np.float32), rest.astype(np.float32)


#: Reference frames kept as acquired per calibration pair (with the low frame: a live window of 5 frames).
HEAD_FRAMES = 4


def assemble_pairs(plan: PairPlan, frames: dict[tuple[int, int, int], np.ndarray]) -> list[CalibrationPair]:
    """The calibration pairs from the frames of a :class:`PairPlan`, keyed ``(position, reference, repeat)``
    (reference 0 = the low-SNR frame, 1 = a high-SNR frame; several are averaged).

    Shared by every acquisition backend so that a frame missing from the acquisition is refused the same way
    everywhere, with the position named, instead of a KeyError or an empty reference."""
    pairs = []
    for k, xy in enumerate(plan.positions):
        low = frames.get((k, 0, 0))
        refs = [v for (p, r, _), v in sorted(frames.items(), key=lambda item: item[0]) if p == k and r == 1]
        if low is None or not refs:
            raise RuntimeError(f"calibration position {k}: frames missing from the acquisition")
        high = np.mean(np.stack(refs).astype(np.float32), axis=0) if len(refs) > 1 else refs[0]
        head = [np.asarray(f) for f in refs[:HEAD_FRAMES]] if plan.reference == "average" else []
        pairs.append(CalibrationPair(k, low, high, {"position_um": xy, "reference_frames": len(refs)}, head))
    return pairs
