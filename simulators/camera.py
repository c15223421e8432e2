"""sCMOS camera model: photons -> photoelectrons -> ADU, with per-pixel maps.

Per pixel i (docs/design.md, "Camera model"; Huang et al. 2013)::

    e_i   = Poisson(QE * photons_i + dark_i * t)          (dark_i is large for hot pixels)
    e_i   = min(e_i, full_well)
    ADU_i = clip(round(gain_i * e_i + N(0, read_var_i) + offset_i), 0, 2**bits - 1)

so that, away from clipping,  mean = gain*(QE*photons + dark*t) + offset  and
variance = gain^2 * (QE*photons + dark*t) + read_var (+1/12 from rounding).
The maps are drawn once from ``CameraConfig.seed`` (the same camera every run); the shot/read noise
stream is a separate generator owned by the caller, so frames are reproducible under a seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.config import CameraConfig


@dataclass(frozen=True)
class CameraMaps:
    """Per-pixel properties of one sensor (full sensor size, float32)."""

    offset: np.ndarray  # ADU
    gain: np.ndarray  # ADU per electron
    read_var: np.ndarray  # ADU^2
    dark_current: np.ndarray  # electrons per second

    def crop(self, y0: int, x0: int, height: int, width: int) -> CameraMaps:
        """The maps of a region of interest."""
        sl = (slice(y0, y0 + height), slice(x0, x0 + width))
        return CameraMaps(self.offset[sl], self.gain[sl], self.read_var[sl], self.dark_current[sl])


def draw_camera_maps(cfg: CameraConfig) -> CameraMaps:
    """Draw the per-pixel offset, gain, read-variance and dark-current maps of a camera from its seed."""
    rng = np.random.default_rng(cfg.seed)
    shape = (cfg.height, cfg.width)
    offset = cfg.offset + cfg.offset_spread * rng.standard_normal(shape)
    gain = cfg.gain * (1.0 + cfg.gain_spread * rng.standard_normal(shape))
    gain = np.maximum(gain, 0.05 * cfg.gain)
    # Read noise sigma in electrons: log-normal around the median, plus rare very noisy pixels (heavy tail).
    sigma_e = cfg.read_noise * np.exp(cfg.read_noise_spread * rng.standard_normal(shape))
    noisy = rng.random(shape) < cfg.noisy_pixel_fraction
    sigma_e[noisy] *= cfg.noisy_pixel_factor
    read_var = (sigma_e * gain) ** 2
    dark = np.full(shape, cfg.dark_current)
    hot = rng.random(shape) < cfg.hot_pixel_fraction
    dark[hot] = cfg.hot_pixel_dark_current
    f32 = np.float32
    return CameraMaps(offset.astype(f32), gain.astype(f32), read_var.astype(f32), dark.astype(f32))


class SCMOSCamera:
    """A simulated sCMOS sensor with a centred region of interest.

    ``expose`` turns an expected photon image (photons per pixel during the exposure) into a noisy
    ADU frame; ``expected`` returns the noise-free mean in the same ADU units (the ground truth).
    """

    def __init__(self, cfg: CameraConfig, roi: tuple[int, int] | None = None) -> None:
        self.config = cfg
        self._full = draw_camera_maps(cfg)
        #: (the maps they are of, dark current, gain, offset): the flat camera of :meth:`without_pattern`
        self._medians: tuple[CameraMaps, float, float, float] | None = None
        self.set_roi(*(roi or (cfg.height, cfg.width)))

    @property
    def max_adu(self) -> int:
        """Largest value the ADC can output."""
        return 2**self.config.bit_depth - 1

    @property
    def dtype(self) -> np.dtype:
        """Pixel type of frames: uint8 for 8-bit cameras, uint16 otherwise."""
        return np.dtype(np.uint8 if self.config.bit_depth <= 8 else np.uint16)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the region of interest."""
        return self.maps.offset.shape

    def set_roi(self, height: int, width: int) -> None:
        """Use a centred region of interest of the sensor."""
        cfg = self.config
        if not (1 <= height <= cfg.height and 1 <= width <= cfg.width):
            raise ValueError(f"ROI {height}x{width} does not fit the {cfg.height}x{cfg.width} sensor of '{cfg.name}'")
        y0, x0 = (cfg.height - height) // 2, (cfg.width - width) // 2
        self.maps = self._full.crop(y0, x0, height, width)
        self._read_sd = np.sqrt(self.maps.read_var)  # per snap otherwise: 0.1 ms of every 512² frame

    def mean_electrons(self, photons: np.ndarray, exposure_s: float) -> np.ndarray:
        """Expected photoelectrons per pixel: QE * photons + dark current * t (before full-well clipping)."""
        return self.config.quantum_efficiency * photons + self.maps.dark_current * exposure_s

    def expected(self, photons: np.ndarray, exposure_s: float) -> np.ndarray:
        """Noise-free expected ADU image (ground truth), including full-well and ADC clipping of the mean."""
        e = np.minimum(self.mean_electrons(photons, exposure_s), self.config.full_well)
        adu = self.maps.gain * e + self.maps.offset
        return np.clip(adu, 0, self.max_adu).astype(np.float32)

    def without_pattern(self, truth: np.ndarray, exposure_s: float) -> np.ndarray:
        """``truth`` (:meth:`expected` of this ROI) as a camera without fixed pattern would record it: each pixel's
        offset, gain and dark current replaced by their medians (what a denoiser that also removes the pattern should
        give). Derived from the truth when asked, so acquisition pays nothing for it; exact except where the truth
        was clipped (full well, ADC range)."""
        if self._medians is None or self._medians[0] is not self.maps:  # per ROI, not per call (125 ms at 2048²)
            m = self.maps
            self._medians = (m, float(np.median(m.dark_current)), float(np.median(m.gain)), float(np.median(m.offset)))
        m, dark, gain, offset = self._medians
        electrons = (truth - m.offset) / m.gain - (m.dark_current - dark) * exposure_s
        return np.clip(gain * electrons + offset, 0, self.max_adu).astype(np.float32)

    def expose(self, photons: np.ndarray, exposure_s: float, rng: np.random.Generator) -> np.ndarray:
        """One noisy frame in ADU (camera dtype) for an expected photon image."""
        lam = self.mean_electrons(np.asarray(photons, dtype=np.float64), exposure_s)
        electrons = rng.poisson(lam).astype(np.float32)
        np.minimum(electrons, self.config.full_well, out=electrons)
        adu = self.maps.gain * electrons
        adu += self.maps.offset
        adu += rng.standard_normal(adu.shape, dtype=np.float32) * self._read_sd
        np.rint(adu, out=adu)
        np.clip(adu, 0, self.max_adu, out=adu)
        return adu.astype(self.dtype)

    def dark_frame(self, exposure_s: float, rng: np.random.Generator) -> np.ndarray:
        """A frame with the shutter closed."""
        return self.expose(np.zeros(self.shape, np.float32), exposure_s, rng)
