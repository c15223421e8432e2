"""SimulatedMicroscope: stage x/y/z, exposure, light power, shutter and time -> noisy frame + ground truth.

This is the physics behind the simulated Micro-Manager devices (:mod:`simulators.devices`): the
devices only forward property changes here and call :meth:`SimulatedMicroscope.snap`.
A low-SNR and a high-SNR acquisition of the same field differ exactly as on a microscope: the photon
budget is ``rate * light_power/100 * exposure``, and the camera adds the same kinds of noise.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulators.camera import SCMOSCamera
from simulators.config import MicroscopeConfig, load_microscope_config, resolve_camera
from simulators.optics import psf_sigma_at
from simulators.sample import Sample


@dataclass
class Frame:
    """One simulated acquisition: the camera image and its noise-free expectation in the same ADU units."""

    image: np.ndarray  # camera dtype (uint16 / uint8), exactly what the camera outputs
    truth: np.ndarray  # float32 expected ADU (gain * (QE*photons + dark*t) + offset)
    metadata: dict[str, Any] = field(default_factory=dict)


#: Memory the ground-truth history of :meth:`SimulatedMicroscope.lookup` may hold (images and truths): 768 MiB, about
#: 500 frames of 512² or 8,000 of 128².
HISTORY_BYTES = 768 * 2**20


def _nbytes(frame: Frame) -> int:
    return int(frame.image.nbytes + frame.truth.nbytes)


class SimulatedMicroscope:
    """A widefield fluorescence microscope with an sCMOS camera looking at a virtual slide.

    Thread-safe: Micro-Manager devices may set properties from one thread while another snaps.
    """

    def __init__(self, config: MicroscopeConfig | None = None) -> None:
        self.config = config or load_microscope_config()
        cam_cfg = resolve_camera(self.config.camera)
        self.camera = SCMOSCamera(cam_cfg, roi=(self.config.roi_height, self.config.roi_width))
        self.sample = Sample(self.config.sample)
        self._rng = np.random.default_rng(self.config.seed)
        self._lock = threading.RLock()
        self.x_um = 0.0
        self.y_um = 0.0
        self.z_um = self.config.focus_z_um
        self.exposure_ms = self.config.exposure_ms
        self.light_power = self.config.light_power
        self.shutter_open = True
        self.frame_index = 0
        self.light_dose = 0.0  # seconds of exposure at 100 % power, drives bleaching
        self.history_size = 4096
        self.history_bytes = HISTORY_BYTES
        self._history_nbytes = 0
        self._truth_by_digest: OrderedDict[bytes, Frame] = OrderedDict()

    # -- state -------------------------------------------------------------------------------
    def set_exposure(self, ms: float) -> None:
        """Exposure in milliseconds (> 0)."""
        if not ms > 0:
            raise ValueError(f"exposure must be > 0 ms, got {ms}")
        with self._lock:
            self.exposure_ms = float(ms)

    def set_light_power(self, percent: float) -> None:
        """Light-source power in percent (0-100)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"light power must be within 0-100 %, got {percent}")
        with self._lock:
            self.light_power = float(percent)

    def set_position(self, x_um: float | None = None, y_um: float | None = None, z_um: float | None = None) -> None:
        """Move the stage (micrometres); x/y select the field on the slide, z defocuses."""
        with self._lock:
            if x_um is not None:
                self.x_um = float(x_um)
            if y_um is not None:
                self.y_um = float(y_um)
            if z_um is not None:
                self.z_um = float(z_um)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of frames."""
        return self.camera.shape

    # -- acquisition -------------------------------------------------------------------------
    def expected_photons(self) -> np.ndarray:
        """Expected photons per pixel reaching the camera in one exposure at the current state."""
        cfg = self.config
        exposure_s = self.exposure_ms / 1000.0
        power = self.light_power / 100.0 if self.shutter_open else 0.0
        sigma = psf_sigma_at(self.z_um, cfg.focus_z_um, cfg.sample.psf_sigma, cfg.sample.defocus_sigma_per_um)
        h, w = self.shape
        y0 = self.y_um / cfg.pixel_size_um - h / 2
        x0 = self.x_um / cfg.pixel_size_um - w / 2
        rate = self.sample.field(y0, x0, h, w, sigma)
        bleach = np.exp(-cfg.sample.bleaching_rate * self.light_dose)
        return rate * (power * exposure_s * bleach)

    def snap(self) -> Frame:
        """Acquire one frame at the current state; sample time advances by the exposure."""
        with self._lock:
            exposure_s = self.exposure_ms / 1000.0
            photons = self.expected_photons()
            image = self.camera.expose(photons, exposure_s, self._rng)
            truth = self.camera.expected(photons, exposure_s)
            meta = {
                "frame_index": self.frame_index,
                "exposure_ms": self.exposure_ms,
                "light_power": self.light_power,
                "x_um": self.x_um,
                "y_um": self.y_um,
                "z_um": self.z_um,
                "sample_time_s": self.sample.time,
                "peak_photons": float(photons.max()),
                "shutter_open": self.shutter_open,
            }
            self.frame_index += 1
            if self.shutter_open:
                self.light_dose += exposure_s * self.light_power / 100.0
            self.sample.advance(exposure_s)
            frame = Frame(image=image, truth=truth, metadata=meta)
            self._remember(frame)
            return frame

    @staticmethod
    def _digest(image: np.ndarray) -> bytes:
        pixels = np.ascontiguousarray(image).view(np.uint8)
        # an ndarray is a buffer; numpy's stubs declare __buffer__ for Python >= 3.12 only
        return hashlib.blake2b(pixels, digest_size=16).digest()  # type: ignore[arg-type]

    def _remember(self, frame: Frame) -> None:
        old = self._truth_by_digest.pop(key := self._digest(frame.image), None)
        self._history_nbytes -= _nbytes(old) if old is not None else 0
        self._truth_by_digest[key] = frame
        self._history_nbytes += _nbytes(frame)
        # the newest frame always stays; older ones go past either bound (count, or memory: 4,096 frames of 512² with
        # their float32 truth would hold 6 GB)
        while len(self._truth_by_digest) > 1 and (len(self._truth_by_digest) > self.history_size
                                                  or self._history_nbytes > self.history_bytes):
            _, dropped = self._truth_by_digest.popitem(last=False)
            self._history_nbytes -= _nbytes(dropped)

    def lookup(self, image: np.ndarray) -> Frame | None:
        """The simulated frame (with its ground truth) that produced ``image``, if among the last ``history_size``
        frames and within ``history_bytes`` of memory (:data:`HISTORY_BYTES`).

        Acquisition software (pycromanager, NDTiff) passes only pixels along; matching by content lets tests
        and the demo score any saved or displayed frame against the simulator's ground truth.
        """
        with self._lock:
            return self._truth_by_digest.get(self._digest(image))

    def reseed(self, seed: int) -> None:
        """Restart the noise stream (the sample and camera maps stay the same)."""
        with self._lock:
            self._rng = np.random.default_rng(seed)
