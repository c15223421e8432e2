"""Simulated tasks: one sample type on a virtual slide, imaged by a camera the backbone never saw."""
from __future__ import annotations

from typing import cast

import numpy as np

from livedenoise.errors import ConfigError


class SimulatedTask:
    """One sample type under one (unseen) camera: fields, noisy frames, pairs, averaged frames.

    Fields are drawn with a minimum amount of structure (an empty field says nothing about a
    denoiser and makes percentile-normalised metrics meaningless). Test fields come from the bottom
    quarter of the slide, training and pair fields from the rest.
    """

    #: Seeds of the task's slide and camera maps: far from those used for backbone pretraining.
    SLIDE_SEED = 90_001
    CAMERA_SEED = 4_242

    def __init__(self, structure: str, size: int, camera: str = "andor-zyla-4.2", *,
                 background_fraction: float = 0.05, exposure_s: float = 0.02, psf_sigma: float = 1.0) -> None:
        from simulators.camera import SCMOSCamera
        from simulators.config import SampleConfig, SimulatorConfigError, StructureKind, load_camera_preset
        from simulators.sample import Sample

        self.size = int(size)
        slide = max(512, 6 * self.size)
        try:
            # an unknown structure is refused by SampleConfig's validation (a ConfigError below)
            cfg = SampleConfig(slide_width=slide, slide_height=slide, structures=[cast(StructureKind, structure)],
                               density=1.0, peak_rate=1.0, background_rate=0.0, psf_sigma=psf_sigma,
                               seed=self.SLIDE_SEED)
            # A sensor exactly the size of the field: the per-pixel maps are drawn for the ROI only
            # (a 2048² preset would cost seconds per task for pixels never used).
            cam_cfg = load_camera_preset(camera).model_copy(
                update={"seed": self.CAMERA_SEED, "width": self.size, "height": self.size})
        except (SimulatorConfigError, ValueError) as exc:
            raise ConfigError(f"Simulated task ({structure!r} on {camera!r}) cannot be built: {exc}") from exc
        self.sample = Sample(cfg)
        self.camera = SCMOSCamera(cam_cfg, roi=(self.size, self.size))
        self.slide = slide
        self.background_fraction = background_fraction
        self.exposure_s = exposure_s
        self._fields: dict[tuple[str, int], list[np.ndarray]] = {}

    def fields(self, kind: str, seed: int, n: int) -> list[np.ndarray]:
        """``n`` photon-rate maps (peak ~1) for ``kind`` in {"train", "pairs", "test"}; nested in ``n``."""
        key = (kind, seed)
        have = self._fields.setdefault(key, [])
        if len(have) >= n:
            return have[:n]
        band = int(self.slide * 0.75)
        lo, hi = (band, self.slide - self.size) if kind == "test" else (0, band - self.size)
        while len(have) < n:
            # one generator per field index: field i is the same whatever was asked for before
            rng = np.random.default_rng([seed, {"train": 1, "pairs": 2, "test": 3}[kind], len(have)])
            best, best_p = None, -1.0
            for _ in range(30):
                y0 = float(rng.uniform(lo, hi))
                x0 = float(rng.uniform(0, self.slide - self.size))
                rate = self.sample.field(y0, x0, self.size, self.size, self.sample.config.psf_sigma)
                p = float(np.percentile(rate, 99))
                if p > best_p:
                    best, best_p = rate, p
                if p >= 0.3:
                    break
            assert best is not None  # the first field always beats best_p = -1
            have.append(best.astype(np.float32))
        return have[:n]

    def photons(self, rate: np.ndarray, peak: float) -> np.ndarray:
        """Expected photons per pixel during the exposure for a field scaled to ``peak`` photons."""
        scaled = rate / max(float(rate.max()), 1e-6) * peak
        return (scaled + self.background_fraction * peak).astype(np.float32)

    def expose(self, rate: np.ndarray, peak: float, rng: np.random.Generator, average: int = 1) -> np.ndarray:
        """One frame (camera dtype), or the float32 mean of ``average`` frames."""
        ph = self.photons(rate, peak)  # photons per exposure; exposure_s only scales the dark current
        if average == 1:
            return self.camera.expose(ph, self.exposure_s, rng)
        acc = np.zeros(rate.shape, np.float64)
        for _ in range(average):
            acc += self.camera.expose(ph, self.exposure_s, rng)
        return (acc / average).astype(np.float32)

    def truth(self, rate: np.ndarray, peak: float) -> np.ndarray:
        """Noise-free expected ADU image (the simulator's ground truth: the camera's fixed pattern included)."""
        return self.camera.expected(self.photons(rate, peak), self.exposure_s)

    def truth_flat(self, rate: np.ndarray, peak: float) -> np.ndarray:
        """The expected image without the camera's fixed pattern: the sample alone, in the same ADU units.

        The simulator's ground truth is ``gain_i * E[e_i] + offset_i`` with per-pixel maps (and
        per-pixel dark current: hot pixels). Averaging frames converges to that pattern, while a
        spatial denoiser smooths it away, so scores against it favour averaging. Here the expected
        photoelectrons (dark current at its median) go through the *median* gain and offset, with
        the same full-well and ADC clipping as :meth:`SCMOSCamera.expected`.
        """
        cam, maps = self.camera, self.camera.maps
        e = (cam.config.quantum_efficiency * self.photons(rate, peak)
             + float(np.median(maps.dark_current)) * self.exposure_s)
        e = np.minimum(e, cam.config.full_well)
        adu = float(np.median(maps.gain)) * e + float(np.median(maps.offset))
        return np.clip(adu, 0, cam.max_adu).astype(np.float32)

    def _rng(self, kind: str, seed: int, peak: float, extra: int = 0) -> np.random.Generator:
        return np.random.default_rng([seed, {"train": 11, "pairs": 12, "test": 13}[kind], round(peak * 1000), extra])

    def train_frames(self, peak: float, seed: int, n: int) -> list[np.ndarray]:
        rng = self._rng("train", seed, peak)
        return [self.expose(r, peak, rng) for r in self.fields("train", seed, n)]

    def pairs(self, peak: float, seed: int, n: int,
              reference_average: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        rng = self._rng("pairs", seed, peak)
        noisy, clean = [], []
        for r in self.fields("pairs", seed, n):
            noisy.append(self.expose(r, peak, rng))
            clean.append(self.expose(r, peak, rng, average=reference_average))
        return noisy, clean

    def test_set(self, peak: float, seed: int, n: int, average: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``n`` noisy test frames (each the mean of ``average`` exposures) and their truth (fixed pattern included)."""
        rng = self._rng("test", seed, peak, average)
        rates = self.fields("test", seed, n)
        return [self.expose(r, peak, rng, average) for r in rates], [self.truth(r, peak) for r in rates]

    def test_truth_flat(self, peak: float, seed: int, n: int) -> list[np.ndarray]:
        """:meth:`truth_flat` of the test fields of :meth:`test_set` (same order)."""
        return [self.truth_flat(r, peak) for r in self.fields("test", seed, n)]
