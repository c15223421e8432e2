"""Fluorescent samples as photon-rate maps: filaments, puncta, mitochondria-like tubes and nuclei.

The slide is a periodic canvas much larger than the field of view, so stage x/y selects different
fields. Static structures (filaments, tubes, nuclei) are rendered once; puncta are points that can
move (random walk) and are rendered per field, so motion costs little. Rates are photons/s/pixel at
100 % light power *after* the PSF, normalised so the brightest structures reach ``peak_rate``.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from simulators.config import SampleConfig
from simulators.optics import blur

#: Structures per 256x256 field at density 1 (Wang et al. used ~10 curves per image).
PER_FIELD = {"filaments": 10, "puncta": 30, "mitochondria": 14, "nuclei": 0.4}
FIELD_AREA = 256 * 256


def _splat(canvas: np.ndarray, ys: np.ndarray, xs: np.ndarray, weights: np.ndarray) -> None:
    """Add point weights at sub-pixel positions with bilinear interpolation (periodic canvas)."""
    h, w = canvas.shape
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = ys - y0, xs - x0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(canvas, ((y0 + dy) % h, (x0 + dx) % w), weights * wy * wx)


def _curve(rng: np.random.Generator, length: float, curvature: float,
           shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random curve sampled every 0.5 px: heading performs a random walk of given curvature."""
    n = max(int(length / 0.5), 2)
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, curvature * 0.5, n))
    y = rng.uniform(0, shape[0]) + np.cumsum(0.5 * np.sin(heading))
    x = rng.uniform(0, shape[1]) + np.cumsum(0.5 * np.cos(heading))
    return y, x


def _count(kind: str, cfg: SampleConfig, rng: np.random.Generator) -> int:
    expected = PER_FIELD[kind] * cfg.density * cfg.slide_width * cfg.slide_height / FIELD_AREA
    return int(rng.poisson(expected))


def render_filaments(cfg: SampleConfig, rng: np.random.Generator) -> np.ndarray:
    """Microtubule-like long, gently curved lines (before the PSF), unit line density."""
    canvas = np.zeros((cfg.slide_height, cfg.slide_width), np.float32)
    for _ in range(_count("filaments", cfg, rng)):
        y, x = _curve(rng, rng.uniform(80, 400), rng.uniform(0.01, 0.05), canvas.shape)
        _splat(canvas, y, x, np.full(y.shape, 0.5 * rng.uniform(0.5, 1.0), np.float32))
    return canvas


def render_mitochondria(cfg: SampleConfig, rng: np.random.Generator) -> np.ndarray:
    """Mitochondria-like tubes: short, thicker, more curved segments with occasional branches."""
    canvas = np.zeros((cfg.slide_height, cfg.slide_width), np.float32)
    for _ in range(_count("mitochondria", cfg, rng)):
        y, x = _curve(rng, rng.uniform(15, 60), rng.uniform(0.05, 0.15), canvas.shape)
        weight = np.full(y.shape, 0.5 * rng.uniform(0.4, 0.9), np.float32)
        _splat(canvas, y, x, weight)
        if rng.random() < 0.3:  # a branch from a random point of the tube
            k = rng.integers(len(y))
            by, bx = _curve(rng, rng.uniform(10, 30), 0.1, canvas.shape)
            _splat(canvas, by - by[0] + y[k], bx - bx[0] + x[k],
                   weight[: len(by)] if len(by) <= len(weight) else np.full(by.shape, weight[0], np.float32))
    # Tubes are ~300-500 nm wide: thicken before the PSF.
    return gaussian_filter(canvas, 1.2, mode="wrap") * 2 * np.pi * 1.2**2 / 2.5


def render_nuclei(cfg: SampleConfig, rng: np.random.Generator) -> np.ndarray:
    """Nuclei: dim textured ellipses with soft edges, each rendered in its own window of the periodic slide."""
    h, w = cfg.slide_height, cfg.slide_width
    canvas = np.zeros((h, w), np.float32)
    for _ in range(max(_count("nuclei", cfg, rng), 1)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(25, 45), rng.uniform(25, 45)
        theta = rng.uniform(0, np.pi)
        half = int(max(ry, rx) * 1.3) + 2
        oy, ox = int(cy) - half, int(cx) - half
        dy, dx = np.mgrid[0:2 * half, 0:2 * half].astype(np.float32)
        dy += oy - cy
        dx += ox - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        r = np.sqrt(u * u + v * v)
        texture = gaussian_filter(rng.standard_normal(r.shape).astype(np.float32), 3)
        texture = np.clip(1 + 0.35 * texture / (texture.std() + 1e-9), 0.2, None)
        patch = rng.uniform(0.12, 0.3) / (1 + np.exp((r - 1) * 12)) * texture
        rows = np.arange(oy, oy + 2 * half) % h
        cols = np.arange(ox, ox + 2 * half) % w
        canvas[np.ix_(rows, cols)] += patch
    return canvas


class Sample:
    """A virtual slide: ``field(y0, x0, h, w, t, psf_sigma)`` returns the photon-rate map of a field of view."""

    def __init__(self, cfg: SampleConfig) -> None:
        self.config = cfg
        rng = np.random.default_rng(cfg.seed)
        shape = (cfg.slide_height, cfg.slide_width)
        static = np.zeros(shape, np.float32)
        kinds = set(cfg.structures)
        if "filaments" in kinds:
            static += render_filaments(cfg, rng)
        if "mitochondria" in kinds:
            static += render_mitochondria(cfg, rng)
        if "nuclei" in kinds:
            static += render_nuclei(cfg, rng)
        #: Static structures before the PSF, in units of peak brightness.
        self.static = static
        n_puncta = _count("puncta", cfg, rng) if "puncta" in kinds else 0
        self.puncta_yx = rng.uniform(0, 1, (n_puncta, 2)) * np.array(shape)
        # A point of weight w under a Gaussian PSF of sigma s peaks at w / (2 pi s^2): brightness 0.3-1 of peak.
        self.puncta_weight = (rng.uniform(0.3, 1.0, n_puncta) * 2 * np.pi
                              * max(cfg.psf_sigma, 1.0) ** 2).astype(np.float32)
        self._motion_rng = np.random.default_rng(cfg.seed + 1)
        self._time = 0.0
        self._blurred_cache: dict[float, np.ndarray] = {}
        self._norm = self._brightness_normaliser()

    def _brightness_normaliser(self) -> float:
        """Scale so the 99.9th percentile of in-focus static structure equals 1 (so peak_rate is meaningful)."""
        blurred = self._static_blurred(self.config.psf_sigma)
        p = float(np.percentile(blurred, 99.9))
        return 1.0 / p if p > 0 else 1.0

    def _static_blurred(self, sigma: float) -> np.ndarray:
        key = round(sigma, 2)
        if key not in self._blurred_cache:
            if len(self._blurred_cache) > 8:
                self._blurred_cache.clear()
            self._blurred_cache[key] = blur(self.static, key)
        return self._blurred_cache[key]

    def advance(self, seconds: float) -> None:
        """Move puncta by a random walk (``motion`` px/s rms per axis) for ``seconds``."""
        if seconds <= 0:
            return
        self._time += seconds
        if self.config.motion > 0 and len(self.puncta_yx):
            step = self.config.motion * np.sqrt(seconds)
            self.puncta_yx += self._motion_rng.normal(0, step, self.puncta_yx.shape)
            self.puncta_yx %= np.array(self.static.shape)

    @property
    def time(self) -> float:
        """Sample time in seconds (advanced by exposures)."""
        return self._time

    def field(self, y0: float, x0: float, height: int, width: int, psf_sigma: float) -> np.ndarray:
        """Photon rate (photons/s/px at 100 % power) of the field whose top-left corner is (y0, x0) on the slide."""
        cfg = self.config
        dy, dx = cfg.drift[1] * self._time, cfg.drift[0] * self._time
        iy, ix = round(y0 + dy), round(x0 + dx)
        H, W = self.static.shape
        rows = np.arange(iy, iy + height) % H
        cols = np.arange(ix, ix + width) % W
        rate = self._static_blurred(psf_sigma)[np.ix_(rows, cols)] * self._norm
        if len(self.puncta_yx):
            margin = 4 * psf_sigma + 2
            rel = (self.puncta_yx - np.array([iy, ix]) + np.array([H, W]) / 2) % np.array([H, W]) - np.array([H, W]) / 2
            keep = ((rel[:, 0] > -margin) & (rel[:, 0] < height + margin)
                    & (rel[:, 1] > -margin) & (rel[:, 1] < width + margin))
            if keep.any():
                pad = int(np.ceil(margin))
                canvas = np.zeros((height + 2 * pad, width + 2 * pad), np.float32)
                _splat(canvas, rel[keep, 0] + pad, rel[keep, 1] + pad, self.puncta_weight[keep])
                rate += gaussian_filter(canvas, psf_sigma, mode="constant")[pad:pad + height, pad:pad + width]
        return (rate * cfg.peak_rate + cfg.background_rate).astype(np.float32)
