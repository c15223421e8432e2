"""The noise model of the user's data: which Poisson-Gaussian parameters, and from where.

Everything a variance-stabilised denoiser does rests on knowing ``var(x) = a * E[x] + b`` for the
frames it is given. A backbone's stored normaliser is only a *template* (its ``scale``, the noise
size in network units it was trained with); the noise parameters always come from the data being
denoised, in this order of trust:

1. **A camera calibration** (per-pixel offset, gain and read-noise maps, Huang et al. 2013): the
   maps are applied per pixel when the frames have the calibrated shape (the fixed pattern is
   removed), their medians otherwise. ``averaged=N`` (frames that are the mean of N acquisitions)
   divides gain and read variance by N.
2. **Temporal differences** (``same_field=True``: two or more frames of the same field -- a time
   series, calibration references, live frames): ``(x_t - x_t+1) / sqrt 2`` is pure noise wherever
   the sample did not move, whatever its structure. Each difference is binned by the mean of the
   *other* frames, each bin placed at the average of the pair's own mean (both independent of the
   selection, so no regression dilution); with only two frames, by the mean of the pixel's eight
   neighbours in both frames (again independent of the pixel's own noise).
3. **The single image** (:func:`single_image_fit`): second differences binned by local mean,
   with pixels on strong structure set aside (structure only ever *adds* variance), so sharp
   filaments at high counts no longer inflate the slope; the mean square of each bin, so sparse
   photon spikes (PMT, EMCCD) count as the noise they are; and the pixel variance restored where
   a point-scanning detector correlates neighbours along the scan line.

Two properties of the data are then checked against the backbone (:func:`fit_noise_model`):

- **Nearly signal-independent noise** (8-bit renders, read-noise-dominated cameras): the fitted
  slope is tiny and the GAT adds a constant of many noise units. A constant shift in the stabilised
  domain (``Normalizer.shift``) brings the dark level back to where the backbone was trained,
  leaving the noise exactly 1 at every level -- a lossless fix, unlike inventing a gain.
- **Signal above the training range** (e.g. 64-frame averages, very bright samples): the backbone
  never saw such inputs. ``fit.in_range`` is False and ``fit.warnings`` says so; callers pass such
  frames through unchanged (never worse than raw) unless told otherwise.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from livedenoise.errors import ConfigError, InputDataError
from livedenoise.normalization import (
    SCALE_PERCENTILE,
    Normalizer,
    _highpass_and_local_mean,
    _robust_variance,
    _subsample,
    check_image,
)

log = logging.getLogger("livedenoise")

#: Stabilised (GAT) level of a dark background the backbones saw: zero photons, 1-2 e- read noise.
TRAINED_DARK_GAT = 2.0 * math.sqrt(3.0 / 8.0 + 2.0)
#: Above this stabilised dark level the dark background is out of the backbone's range (about 6 e- rms
#: read noise): the normaliser shifts it back to ``TRAINED_DARK_GAT``.
MAX_DARK_GAT = 2.0 * math.sqrt(3.0 / 8.0 + 36.0)
#: Brightest stabilised level the default backbone was trained on: peaks of 3,000 photoelectrons (synthetic recipe,
#: ``livedenoise.training.synthetic.NoiseRecipe.max_photons``; a field's brightest pixels reach ~3x that). The
#: first release's backbones (``standard``) saw peaks up to 1,000.
TRAINED_BRIGHT_GAT = 2.0 * math.sqrt(3000.0 + 3.0 / 8.0)
#: Beyond this many times the trained bright level (about 4x the photons) the frames are out of range.
BRIGHT_TOLERANCE = 2.0

METHODS = ("calibration maps", "calibration", "temporal differences", "single image", "stored")


@dataclass
class NoiseFit:
    """A fitted normaliser and how it was obtained (goes into provenance)."""

    normalizer: Normalizer
    method: str
    frames: int
    a_adu: float  # var(x) = a_adu * x + b_adu, in the frames' units (offset absorbed into b)
    b_adu: float
    bright_gat: float = math.nan  # 99.9th percentile of the frames in stabilised units
    in_range: bool = True
    averaged: int = 1
    calibration: str | None = None
    warnings: list[str] = field(default_factory=list)
    correlation_ratio: float = math.nan  # noise_correlation_ratio of the stabilised frames (1.0: independent pixels)
    correlation_factor: float = 1.0  # variance multiplier applied for spatially correlated noise (1: none)
    #: axis along which neighbours share noise (point-scanning detectors), single-image fits
    scan_axis: str | None = None
    scan_correlation: float = 0.0  # the neighbour correlation of the noise along ``scan_axis``
    #: temporal-difference variance / single-image variance at the frames' typical and bright levels (the larger),
    #: where frames of one field were given; above :data:`MOTION_RATIO` the sample moved and the single-image fit
    #: is used
    temporal_excess: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "frames": self.frames, "var_model_adu": {"a": self.a_adu, "b": self.b_adu},
               "bright_stabilised": None if not math.isfinite(self.bright_gat) else self.bright_gat,
               "in_range": self.in_range, "averaged": self.averaged, "normalizer": self.normalizer.to_dict(),
               "pixel_maps": self.normalizer.has_pixel_maps, "warnings": list(self.warnings),
               "noise_correlation_ratio": None if not math.isfinite(self.correlation_ratio) else self.correlation_ratio,
               "correlated_noise_factor": self.correlation_factor,
               "scan_line_correlation": ({"axis": self.scan_axis, "correlation": self.scan_correlation}
                                         if self.scan_axis else None),
               "temporal_excess": None if not math.isfinite(self.temporal_excess) else self.temporal_excess}
        if self.calibration:
            out["calibration"] = self.calibration
        return out

    def describe(self) -> str:
        return (f"noise model from {self.method} ({self.frames} frame{'s' if self.frames != 1 else ''}): "
                f"var = {self.a_adu:.4g} * x {self.b_adu:+.4g}")


#: The smallest frame side the single-image fit works on (its 9x9 local-structure window).
MIN_FIT_SIDE = 9


# --------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------
def _line_fit(c: np.ndarray, v: np.ndarray, n: np.ndarray, *, envelope: bool) -> tuple[float, float]:
    """Weighted least-squares ``v = a*c + b`` through binned variances (weights ``n / v^2``).

    With ``envelope`` the bins above the line by more than 2 standard errors are down-weighted
    and the line refitted: structure adds variance, never removes it, so the trustworthy bins are
    the lower ones.
    """
    fitted = np.maximum(v, 1e-12)
    weight_scale = np.ones_like(v)
    a = b = 0.0
    for it in range(6 if envelope else 3):
        w = weight_scale * n / np.maximum(fitted, 1e-12 * max(1.0, float(v.max()))) ** 2
        design = np.stack([c, np.ones_like(c)], axis=1) * np.sqrt(w)[:, None]
        (a, b), *_ = np.linalg.lstsq(design, v * np.sqrt(w), rcond=None)
        fitted = np.abs(a * c + b)
        if envelope and it >= 2:
            se = fitted * math.sqrt(2.0) / np.sqrt(np.maximum(n, 1.0))
            excess = (v - fitted) / np.maximum(se, 1e-12)
            weight_scale = np.where(excess > 2.0, 1.0 / (1.0 + (excess - 2.0) ** 2), 1.0)
    return float(a), float(b)


def _level_bins(m: np.ndarray, n_bins: int, min_per_bin: int) -> list[np.ndarray]:
    """Index sets of pixels binned by level: equally populated bins, and equally wide ones over the range.

    Equal populations alone put every bright pixel of a sparse sample (puncta, thin filaments) into one
    bin spanning a hundredfold range of levels, whose robust variance then means nothing; the equally
    wide edges split it. Bins with fewer than ``min_per_bin`` pixels are merged into their neighbour.
    """
    bins = int(min(n_bins, max(1, m.size // min_per_bin)))
    q_edges = np.quantile(m, np.linspace(0, 1, bins + 1))
    w_edges = np.linspace(float(m.min()), float(m.max()), n_bins + 1)
    edges = np.unique(np.concatenate([q_edges, w_edges]))
    order = np.argsort(m, kind="stable")
    pos = np.searchsorted(m[order], edges[1:-1], side="right")
    groups: list[np.ndarray] = []
    start = 0
    for stop in [*pos, m.size]:
        if stop - start >= min_per_bin or (stop == m.size and not groups):
            groups.append(order[start:stop])
            start = stop
    if start < m.size:  # the remainder joins the last bin
        groups[-1] = np.concatenate([groups[-1], order[start:]])
    return [g for g in groups if g.size]


def _mean_square(r: np.ndarray) -> float:
    """Variance of zero-mean temporal differences: the mean square without the largest 0.02 % (gross outliers).

    Temporal differences have no structure edges, so the clipped estimator of the single-image fit is not needed,
    and it under-estimates a bin whose pixels span several levels (its median is set by the dimmer majority).
    """
    sq = r.astype(np.float64) ** 2
    if sq.size >= 5000:
        sq = sq[sq <= np.quantile(sq, 0.9998)]
    return float(np.mean(sq))


#: A bin whose mean square exceeds this many times its robust (clipped) variance holds its noise mostly in rare
#: large spikes: see :func:`_spiky_variance`.
SPIKY_RATIO = 2.0


def _spiky_variance(r: np.ndarray) -> float:
    """Variance of zero-mean residuals whose tails may *be* the noise: the robust estimate, or the mean square where
    rare large spikes carry most of the variance.

    Two kinds of heavy tails meet here. A photon-counting detector with a large gain (a confocal's PMT, an EMCCD) at
    a few photons per pixel gives read noise plus rare spikes of tens of ADU: the spikes are the photon noise, and a
    clipped estimate drops them (gigadb actin_confocal's dim bins: 0.4-1 ADU^2 clipped, 6-35 by mean square). An
    sCMOS camera's few very noisy pixels, or structure left in a bin, add tails that are *not* the typical pixel's
    noise and that the robust estimate rightly ignores (mean square there: 5 % more, and the backbone up to 0.9 dB
    worse at 1 photon against the simulator's sample). So the mean square is used where it exceeds
    :data:`SPIKY_RATIO` times the robust estimate -- where the tails are most of the noise -- else the robust one.
    """
    robust, mean_sq = _robust_variance(r), _mean_square(r)
    return mean_sq if mean_sq > SPIKY_RATIO * robust else robust


def _bin_fit(r: np.ndarray, m: np.ndarray, *, n_bins: int, min_per_bin: int, envelope: bool,
             level: np.ndarray | None = None, variance=_robust_variance) -> tuple[float, float]:
    """Variance of residuals ``r`` binned by level ``m`` -> line ``(a, b)`` (slope floored at a tiny positive).

    ``level``: an unbiased per-pixel estimate of the mean whose noise is independent of ``m``; each bin's
    centre is its average (binning selects noise in ``m``, so ``m``'s own bin average is more extreme than the
    bin's true mean: regression dilution).
    """
    if r.size == 0:
        raise InputDataError("No usable pixels for noise estimation (all saturated or clipped); "
                             "expected unsaturated pixels.")
    idx = _subsample(np.arange(r.size))
    r, m = r[idx], m[idx]
    centre_of = m if level is None else level[idx]
    median_level = float(np.median(m))
    a_floor = 1e-6 * max(1.0, abs(median_level))
    centres, variances, counts = [], [], []
    for chunk in _level_bins(m, n_bins, min_per_bin):
        centres.append(float(np.mean(centre_of[chunk])))
        variances.append(variance(r[chunk]))
        counts.append(chunk.size)
    c, v, n = np.asarray(centres), np.asarray(variances), np.asarray(counts, np.float64)
    if c.size < 2 or np.ptp(c) <= 1e-9 * max(1.0, float(np.abs(c).max())):
        var = float(np.average(v, weights=n))
        a = max(var / median_level, a_floor) if median_level > 0 else a_floor
        b = 0.0 if a == a_floor else var - a * median_level
        return float(a), float(b)
    a, b = _line_fit(c, v, n, envelope=envelope)
    if not (math.isfinite(a) and math.isfinite(b)):  # pragma: no cover - defensive
        raise InputDataError("The noise of the frames could not be estimated (the fit did not converge).")
    if a < a_floor:
        a = a_floor
        b = float(np.average(v - a * c, weights=n))
    return float(a), float(b)


def _clip_levels(frames: Sequence[np.ndarray], saturation: float | None) -> tuple[float | None, float | None]:
    """(low, high) values at which the data are clipped, or None: a value held by >= 0.5 % of the pixels at the
    very bottom (8-bit renders clipped at 0) or top (saturation, 255 in 8-bit) of the data."""
    sample = np.concatenate([np.asarray(f).ravel()[:: max(1, f.size // 200_000)] for f in frames])
    lo_v, hi_v = float(sample.min()), float(sample.max())
    low = lo_v if np.mean(sample == lo_v) >= 0.005 else None
    high = hi_v if np.mean(sample == hi_v) >= 0.005 else None
    if saturation is not None:
        high = float(saturation) if high is None else min(high, float(saturation))
    return low, high


def _clipped_pixels(f: np.ndarray, low: float | None, high: float | None) -> np.ndarray | None:
    """Mask of the pixels of ``f`` at or beyond a clipped level, or None when nothing is clipped."""
    bad = np.zeros(f.shape, bool)
    if low is not None:
        bad |= f <= low
    if high is not None:
        bad |= f >= high
    return bad if bad.any() else None


def _valid_windows(bad: np.ndarray | None, size: int = 3) -> np.ndarray | None:
    """Mask on the (H-2, W-2) residual grid of ``size`` x ``size`` windows touching no ``bad`` (clipped) pixel."""
    from scipy.ndimage import maximum_filter

    if bad is None or not bad.any():
        return None
    return ~maximum_filter(bad, size=size, mode="nearest")[1:-1, 1:-1]


#: Residual-to-right-neighbour correlation of the second difference ``[1,-2,1] x [1,-2,1]`` for pixel-independent
#: noise: the kernel's own autocorrelation at lag 1, ``6 * (-4) / 36``.
_WHITE_LAG1 = -2.0 / 3.0
#: The lag-1 correlations of the residual along x and along y differ by more than this on scanned images
#: (measured: 0.106 and 0.113 on the gigadb confocal renders) and by at most 0.024 elsewhere (every other dev pair;
#: simulated cameras at 20-20,000 e-, sharp filaments and puncta, sparse-photon detectors).
SCAN_ANISOTROPY = 0.05
#: Largest pixel-variance factor the scan correction applies (neighbour correlation 0.375).
MAX_SCAN_FACTOR = 2.0


@dataclass
class SingleImageFit:
    """:func:`single_image_fit`'s result: the pixel-scale noise model and the scan-line correlation found."""

    a: float
    b: float
    scan_axis: str | None = None  # "x" or "y": the axis along which neighbouring pixels share noise
    scan_correlation: float = 0.0  # the lag-1 correlation of the noise along that axis
    scan_factor: float = 1.0  # pixel variance / what second differences measured (applied to a and b)
    pooled: float = math.nan  # the variance over every level at once (the same pixels, the same scan factor)


def single_image_fit(frames: Sequence[np.ndarray] | np.ndarray, *, saturation: float | None = None,
                     n_bins: int = 24, min_per_bin: int = 300,
                     clipped: Sequence[np.ndarray | None] | None = None) -> SingleImageFit:
    """The noise model of single images (pooled), robust to sharp structure, sparse photons and scan-line correlation.

    Second differences (which cancel locally bilinear signal) binned by a 7x7 local mean; windows
    touching clipped or saturated pixels are ignored; in each bin the half of the pixels with the
    strongest local structure (the largest smoothed residual energy of their neighbourhood, on a
    scale that leaves the pixel's own noise out) is set aside.

    Each bin's variance is :func:`_spiky_variance`: the robust (clipped) estimate, or the mean square where rare
    large spikes carry most of the variance -- a detector that counts sparse photons with a large gain (a
    confocal's PMT, an EMCCD), whose spikes *are* the photon noise (a probe on simulated PMT frames at 3-8
    photons peak: slope 0.69-0.88x the truth with the robust estimate alone, 0.88-1.22x now).

    A point-scanning microscope's detector bandwidth makes neighbours *along the scan line* share noise.
    Second differences then see less than the pixel variance (``1 - 4/3 rho`` of it). The residual's
    lag-1 correlation along each axis tells: ``-2/3`` for independent noise whatever the level; structure
    shifts both axes alike; a scan shifts one. When they differ by more than :data:`SCAN_ANISOTROPY`, the
    correlation along the scan axis is solved from the residual's (the other axis taken as independent)
    and ``a`` and ``b`` are divided by ``1 - 4/3 rho``: the pixel variance, which temporal differences measure
    directly.

    ``clipped``: one mask per frame of the pixels clipped in the camera's data, for frames already transformed
    (stabilised frames, whose own lowest level may be the transform's floor, not a clipping); by default the
    clipped levels are found in the frames themselves.
    """
    from scipy.ndimage import uniform_filter

    data = _frames(frames, "image for noise estimation")
    low, high = _clip_levels(data, saturation) if clipped is None else (None, None)
    if clipped is not None and len(clipped) != len(data):
        raise ValueError(f"{len(clipped)} clipping masks for {len(data)} frames")
    rs, ms, ss, lag_x, lag_y = [], [], [], [], []
    for i, f in enumerate(data):
        if min(f.shape[-2:]) < MIN_FIT_SIDE:
            raise InputDataError(f"An image for noise estimation has shape {f.shape}; expected at least "
                                 f"{MIN_FIT_SIDE}x{MIN_FIT_SIDE} pixels.")
        f64 = f.astype(np.float64, copy=False)
        r, m = _highpass_and_local_mean(f64)
        # local structure: residual energy in a 9x9 neighbourhood *excluding* a 3x3 core around the pixel, so the
        # pixel's own noise barely enters the ranking (an unbiased selection on flat regions)
        e = r * r
        big = uniform_filter(e, size=9, mode="reflect") * 81.0
        core = uniform_filter(e, size=3, mode="reflect") * 9.0
        s = (big - core) / 72.0
        # products with the right and lower neighbours, kept only where a 5x5 window is unclipped: the same
        # isotropic selection for both axes (a selection on clipping along one axis would fake a correlation)
        px, py = np.full(r.shape, np.nan), np.full(r.shape, np.nan)
        px[:, :-1], py[:-1] = r[:, :-1] * r[:, 1:], r[:-1] * r[1:]
        bad = _clipped_pixels(f64, low, high) if clipped is None else clipped[i]
        wide = _valid_windows(bad, size=5)
        if wide is not None:
            px[~wide], py[~wide] = np.nan, np.nan
        keep = _valid_windows(bad)
        if keep is not None:
            r, m, s, px, py = r[keep], m[keep], s[keep], px[keep], py[keep]
        rs.append(r.ravel())
        ms.append(m.ravel())
        ss.append(s.ravel())
        lag_x.append(px.ravel())
        lag_y.append(py.ravel())
    r, m, s = np.concatenate(rs), np.concatenate(ms), np.concatenate(ss)
    if r.size == 0:
        if all(float(np.ptp(f)) == 0.0 for f in data):  # the clipping test reads a constant image as all clipped
            value = (f"every pixel is {float(data[0].flat[0]):g}" if len(data) == 1 else
                     f"each of its {len(data)} frames has one value everywhere")
            raise InputDataError(f"The image for noise estimation is constant ({value}); expected a noisy camera "
                                 "image whose pixels vary.")
        raise InputDataError("Every pixel of the image for noise estimation is saturated or clipped; "
                             "expected unsaturated pixels.")
    # within each level bin, keep the calmer half by local structure
    bins = int(min(4 * n_bins, max(1, r.size // (2 * min_per_bin))))
    order = np.argsort(m, kind="stable")
    keep_idx = []
    for chunk in np.array_split(order, bins):
        if chunk.size == 0:
            continue
        thr = np.median(s[chunk])
        keep_idx.append(chunk[s[chunk] <= thr])
    sel = np.concatenate(keep_idx)
    a, b = _bin_fit(r[sel], m[sel], n_bins=n_bins, min_per_bin=min_per_bin, envelope=False, variance=_spiky_variance)
    fit = SingleImageFit(a, b, pooled=_spiky_variance(r[sel]))
    rho, axis = _scan_correlation(r[sel], np.concatenate(lag_x)[sel], np.concatenate(lag_y)[sel])
    if axis is not None:
        fit.scan_axis, fit.scan_correlation = axis, rho
        fit.scan_factor = min(1.0 / (1.0 - 4.0 * rho / 3.0), MAX_SCAN_FACTOR)
        fit.a, fit.b, fit.pooled = a * fit.scan_factor, b * fit.scan_factor, fit.pooled * fit.scan_factor
    return fit


def _scan_correlation(r: np.ndarray, lag_x: np.ndarray, lag_y: np.ndarray) -> tuple[float, str | None]:
    """(noise correlation between neighbours along the scan axis, "x" or "y"), or (0, None) without a scan.

    ``lag_x``/``lag_y``: each residual times its right/lower neighbour's (NaN where not measured).
    """
    corr = {}
    for axis, prod in (("x", lag_x), ("y", lag_y)):
        ok = np.isfinite(prod)
        if ok.sum() < 2000:
            return 0.0, None
        corr[axis] = float(np.sum(prod[ok]) / max(np.sum(r[ok] ** 2), 1e-300))
    scan, other = ("x", "y") if corr["x"] > corr["y"] else ("y", "x")
    excess = corr[scan] - corr[other]
    if excess <= SCAN_ANISOTROPY:
        return 0.0, None
    c = _WHITE_LAG1 + excess  # the other axis read as independent noise
    # residual lag-1 correlation for noise with neighbour correlation rho along one axis:
    # c = (-24 + 42 rho) / (36 - 48 rho)  =>  rho = (36 c + 24) / (42 + 48 c)
    rho = (36.0 * c + 24.0) / (42.0 + 48.0 * c)
    return float(min(max(rho, 0.0), 0.375)), scan


def estimate_single_image(frames: Sequence[np.ndarray] | np.ndarray, *, saturation: float | None = None,
                          n_bins: int = 24, min_per_bin: int = 300) -> tuple[float, float]:
    """``(a, b)`` with ``var(x) = a*E[x] + b`` (the pixel variance) from single images: :func:`single_image_fit`."""
    fit = single_image_fit(frames, saturation=saturation, n_bins=n_bins, min_per_bin=min_per_bin)
    return fit.a, fit.b


def estimate_temporal(frames: Sequence[np.ndarray] | np.ndarray, *, saturation: float | None = None,
                      n_bins: int = 24, min_per_bin: int = 300) -> tuple[float, float]:
    """``(a, b)`` from two or more frames of the *same field* (consecutive differences)."""
    from scipy.ndimage import uniform_filter

    data = _frames(frames, "frames for temporal noise estimation")
    if len(data) < 2:
        raise InputDataError("Temporal noise estimation needs at least two frames of the same field.")
    shapes = {f.shape for f in data}
    if len(shapes) > 1:
        raise InputDataError(f"Frames of one field must have one shape; got {sorted(shapes)}.")
    low, high = _clip_levels(data, saturation)
    rs, ms, cs = [], [], []
    stack = np.stack([f.astype(np.float64) for f in data])
    total = stack.sum(axis=0)
    for t in range(len(data) - 1):
        a1, a2 = stack[t], stack[t + 1]
        d = (a1 - a2) / math.sqrt(2.0)
        d -= np.median(d)  # a global brightness change (bleaching, lamp flicker) is not noise
        # Binned by the mean of the *other* frames (three or more), with each bin's level the average of the pair's
        # own mean: both independent of the selection, so no regression dilution at any count. With two frames,
        # binned by the neighbours' mean instead.
        pair = 0.5 * (a1 + a2)
        if len(data) >= 3:
            mean = (total - a1 - a2) / (len(data) - 2)
        else:  # two frames: the pair's mean over the 8 neighbours, which excludes the pixel's own noise
            mean = (uniform_filter(pair, size=3, mode="reflect") * 9.0 - pair) / 8.0
        keep = np.ones(d.shape, bool)
        for lim, op in ((low, np.less_equal), (high, np.greater_equal)):
            if lim is not None:
                keep &= ~(op(a1, lim) | op(a2, lim))
        rs.append(d[keep].ravel())
        ms.append(mean[keep].ravel())
        cs.append(pair[keep].ravel())
    return _bin_fit(np.concatenate(rs), np.concatenate(ms), n_bins=n_bins, min_per_bin=min_per_bin, envelope=False,
                    level=np.concatenate(cs), variance=_mean_square)


def stabilised_noise(stabilised: np.ndarray, *, clipped: np.ndarray | None = None, max_side: int = 1024) -> float:
    """Noise standard deviation of a frame already in stabilised units (1 when the noise model is right).

    Measured the way :func:`single_image_fit` measures the raw frames (mean square of calm second differences,
    windows touching ``clipped`` pixels -- the raw frame's clipped ones -- left out, the pixel variance restored
    along a scan line), pooled over all levels, on at most the central ``max_side``² window (cost). NaN when
    nothing can be measured.
    """
    t = np.asarray(stabilised, np.float64)
    h, w = t.shape[-2:]
    y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    window = (Ellipsis, slice(y0, y0 + max_side), slice(x0, x0 + max_side))
    try:
        fit = single_image_fit([t[window]], clipped=[None if clipped is None else np.asarray(clipped, bool)[window]])
    except InputDataError:
        return math.nan
    return float(math.sqrt(max(fit.pooled, 0.0)))


def _frames(frames: Sequence[np.ndarray] | np.ndarray, what: str) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray):
        arr = check_image(frames, what, min_ndim=2)
        return list(arr.reshape(-1, *arr.shape[-2:]))
    out: list[np.ndarray] = []
    for i, f in enumerate(frames):
        arr = check_image(f, f"{what} #{i}", min_ndim=2)
        out.extend(arr.reshape(-1, *arr.shape[-2:]))
    if not out:
        raise InputDataError(f"No {what} given; expected at least one 2-D image.")
    return out


# --------------------------------------------------------------------------------------------
# the one call
# --------------------------------------------------------------------------------------------
#: Temporal differences that show more than this times the variance the single-image fit finds (at the frames'
#: median or bright level) are taken as motion, not noise: the sample moved or drifted between the frames, and the
#: difference of two frames holds the change of the image as well as the noise. Measured on the project simulator's
#: time-lapses (8 frames, 256², 5/20/100 photons, PSF sigma 1 and 2 px; benchmarks/bench_motion_noise.py and a
#: probe with other seeds): at most 1.00 on still samples, 1.47-2.16 at 100 photons with moving puncta and drift
#: (temporal fit 1.6-2.3x the camera's true variance, single-image fit 1.04-1.11x). But a still field of sharp
#: filaments at 20,000 photons gives 1.35 (the single-image slope 26 % low there: tests/test_noise_model.py), so
#: 1.5: the 1.47 case keeps its temporal fit (0.17 dB below the single-image fit's result, measured).
MOTION_RATIO = 1.5
#: Frames the single-image check of a temporal fit looks at (it is a check, not the fit).
MOTION_CHECK_FRAMES = 2


def _temporal_excess(data: Sequence[np.ndarray], temporal: tuple[float, float], single: tuple[float, float]) -> float:
    """How many times the temporal fit's variance exceeds the single-image fit's, at the field's median and bright
    (99.5th percentile) levels of the frames' mean (the larger ratio); NaN where the single fit predicts no noise."""
    mean = np.mean(np.stack([np.asarray(f, np.float64) for f in data]), axis=0)
    levels = np.percentile(mean, [50.0, 99.5])
    ratios = []
    for level in levels:
        t, s = temporal[0] * level + temporal[1], single[0] * level + single[1]
        if s > 0 and math.isfinite(t):
            ratios.append(t / s)
    return float(max(ratios)) if ratios else math.nan


def fit_noise_model(
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    like: Normalizer | None = None,
    calibration: Any = None,
    same_field: bool = False,
    averaged: int = 1,
    saturation: float | None = None,
) -> NoiseFit:
    """The normaliser for *these* frames, in the convention (``scale``, inversion) of a backbone ``like``.

    ``calibration``: a :class:`~livedenoise.camera_calibration.CameraCalibration` (or a path to one).
    ``same_field``: the frames are repeated acquisitions of one field (time series, references):
    the noise is then measured from temporal differences. ``averaged``: each frame is the mean of
    this many acquisitions (only changes calibrated fits; estimated fits measure it directly).
    """
    if int(averaged) != averaged or averaged < 1:
        raise ConfigError(f"averaged = {averaged!r} is invalid; expected the number of acquisitions averaged per "
                          "frame (an integer >= 1).")
    averaged = int(averaged)
    data = _frames(frames, "frames to fit the noise model on")
    if saturation is None and like is not None:
        saturation = like.saturation
    vst = like.vst if like is not None else True
    cal_name = None
    if calibration is not None and not hasattr(calibration, "offset"):
        from livedenoise.camera_calibration import CameraCalibration

        cal_name = str(calibration)
        calibration = CameraCalibration.load(calibration)
    warnings: list[str] = []
    maps = None
    excess = math.nan  # temporal fits only: how far the temporal differences exceed single frames' noise
    if calibration is not None:
        s = calibration.summary()
        offset, gain, read_var = s["offset"], s["gain"] / averaged, s["read_var"] / averaged
        shapes = {f.shape for f in data}
        if shapes == {tuple(calibration.shape)}:
            maps = (calibration.offset.astype(np.float32), (calibration.gain / averaged).astype(np.float32))
            method = "calibration maps"
        else:
            method = "calibration"
            warnings.append(f"the camera calibration is {calibration.shape[1]}x{calibration.shape[0]} px but the "
                            f"frames are {', '.join(sorted(f'{w}x{h}' for h, w in shapes))}: its median offset, gain "
                            "and read "
                            "noise are used (per-pixel maps need frames of the calibrated size)")
        a_adu, b_adu = gain, read_var - gain * offset
        norm = Normalizer(offset=offset, gain=gain, noise_a=1.0, noise_b=read_var / gain**2, vst=vst,
                          saturation=saturation,
                          pixel_offset=None if maps is None else maps[0], pixel_gain=None if maps is None else maps[1])
    else:
        if same_field and len(data) >= 2 and len({f.shape for f in data}) == 1:
            a_adu, b_adu = estimate_temporal(data, saturation=saturation)
            method = "temporal differences"
            # frames of one field that differ by more than noise: the sample moved, and the differences hold motion
            single = single_image_fit(data[:MOTION_CHECK_FRAMES], saturation=saturation)
            excess = _temporal_excess(data, (a_adu, b_adu), (single.a, single.b))
            if excess > MOTION_RATIO:
                warnings.append(f"the frames of this field differ by more than noise (temporal differences show "
                                f"{excess:.1f}x the variance single frames do: the sample moved or drifted between "
                                "them); the noise model is fitted on single frames instead")
                single = single_image_fit(data, saturation=saturation)
                a_adu, b_adu, method = single.a, single.b, "single image"
        else:
            single = single_image_fit(data, saturation=saturation)
            a_adu, b_adu = single.a, single.b
            method = "single image"
        if method == "single image" and single.scan_axis:
            warnings.append(f"neighbouring pixels along {single.scan_axis} share noise (correlation "
                            f"{single.scan_correlation:.2f}; a point-scanning detector's bandwidth): the noise "
                            f"model uses the pixel variance, {single.scan_factor:.2f}x what pixel differences show")
        norm = Normalizer(offset=0.0, gain=a_adu, noise_a=1.0, noise_b=b_adu / a_adu**2, vst=vst, saturation=saturation)
    sample = np.concatenate([_subsample(f.ravel(), 2_000_000 // len(data) + 1) for f in data]).astype(np.float64)
    fit = NoiseFit(norm, method, len(data), float(a_adu), float(b_adu), averaged=averaged, calibration=cal_name,
                   warnings=warnings, temporal_excess=excess)
    if method == "single image" and single.scan_axis:
        fit.scan_axis, fit.scan_correlation = single.scan_axis, single.scan_correlation
    if norm.vst:
        stabilised = [norm.to_stabilised(f) for f in data[:4]]
        fit.correlation_ratio = noise_correlation_ratio(stabilised)
        if is_correlated(fit.correlation_ratio):
            factor = 1.0
            if calibration is None:
                # A denoiser trained on independent noise takes low-frequency noise for signal. Fitted on 4x4-binned
                # frames, where noise correlated over a few pixels is nearly independent, and scaled by 16, the model
                # is the independent noise of equal power at that scale (the camera's own level before the filter),
                # so the denoiser removes it (measured: +2.5-4 dB on fmd_widefield_bpae; BM3D, given the same
                # estimate, gains too).
                a_bin, b_bin = estimate_single_image([bin4(f) for f in data], saturation=None)
                a_new, b_new = 16.0 * a_bin, 16.0 * b_bin
                factor = ((a_new * float(np.median(sample)) + b_new)
                          / max(a_adu * float(np.median(sample)) + b_adu, 1e-12))
                if not (a_new > 0 and factor > 1.0):
                    # the binned frames are too small or too structured for a fit: raise the pixel-scale model to
                    # the same equal-power level measured on the robust diagonal band instead
                    factor = equal_power_factor(stabilised)
                    a_new, b_new = a_adu * factor, b_adu * factor
                if a_new > 0 and factor > 1.0:
                    a_adu, b_adu = a_new, b_new
                    norm = Normalizer(offset=0.0, gain=a_adu, noise_a=1.0, noise_b=b_adu / a_adu**2, vst=vst,
                                      saturation=saturation)
                    fit.a_adu, fit.b_adu, fit.normalizer = float(a_adu), float(b_adu), norm
                else:
                    factor = 1.0
            warnings.append(
                f"the noise is spatially correlated (coarse/fine noise ratio {fit.correlation_ratio:.2f}; camera "
                "noise, independent from pixel to pixel, gives 1.0): the frames were filtered, interpolated or binned "
                "after the camera"
                + (f"; the noise model is fitted on 4x4-binned frames instead (variance {factor:.1f}x the pixel-scale "
                   "fit), the independent noise of equal power at that scale, so the denoiser removes it"
                   if factor > 1.0 else "")
                + "; self-supervised adaptation (which would learn it as signal) is skipped")
            fit.correlation_factor = factor
    if like is None:
        stab = norm.to_stabilised(sample)
        scale = float(np.percentile(np.abs(stab), SCALE_PERCENTILE))
        fit.normalizer = norm.copy(scale=scale if math.isfinite(scale) and scale > 1e-12 else 1.0)
        fit.bright_gat = float(np.percentile(stab, 99.9))
        return fit
    norm = norm.copy(scale=like.scale, inversion=like.inversion)
    if norm.vst:
        norm = _keep_in_range(norm, sample, fit)
    fit.normalizer = norm
    for w in fit.warnings:
        log.warning("%s", w)
    return fit


#: Above this :func:`noise_correlation_ratio` the noise is treated as spatially correlated. Pixel-independent
#: camera noise gives 1.0: measured 0.98-1.10 on the dev pairs and the simulator up to 100 photons, 1.32 on
#: sharp structure at 1,000 photons (structure leaks into the coarse band); fmd_widefield_bpae, whose noise
#: has a neighbour correlation of 0.62, gives 2.77.
CORRELATED_NOISE_RATIO = 1.8


def noise_correlation_ratio(stabilised: Sequence[np.ndarray]) -> float:
    """How much more noise a 2x2-binned frame holds than pixel-independent noise would leave (1.0 when independent).

    The robust noise level (MAD of the finest Haar diagonal band) is measured on each frame and on its 2x2
    mean; binning divides independent noise's standard deviation by 2, so ``2 * sigma_binned / sigma`` is
    1 for camera noise and grows when neighbouring pixels share noise (a filter, demosaicing, resampling).
    The diagonal band holds little structure at either scale, which keeps the ratio near 1 on real images.
    Blocks touching clipped pixels are left out at both scales: a render clipped at 0 has zero-valued Haar
    bands over its clipped background, which would drive the fine level (a median) to 0 and the ratio to
    infinity (gigadb mito_confocal, 78 % of its pixels at 0: inf, 1.31 without them).
    Median over the frames given (in variance-stabilised units, where the noise level is uniform).
    """
    ratios = []
    for z in stabilised:
        z = np.asarray(z, np.float64)
        h, w = (z.shape[-2] // 4) * 4, (z.shape[-1] // 4) * 4
        if h < 16 or w < 16:
            continue
        z = z[..., :h, :w]
        valid = unclipped_mask(z)
        binned, valid_binned = _bin_with_mask(z, valid, 2)
        fine, coarse = _haar_diagonal_sigma(z, valid), _haar_diagonal_sigma(binned, valid_binned)
        if math.isnan(fine) or math.isnan(coarse):  # too few unclipped blocks to tell
            continue
        if fine > 0:
            ratios.append(2.0 * coarse / fine)
        elif coarse > 0:  # no noise left at the pixel scale at all: smoothed frames
            ratios.append(math.inf)
    return float(np.median(ratios)) if ratios else math.nan


def equal_power_factor(stabilised: Sequence[np.ndarray]) -> float:
    """``16 * sigma_4x4**2 / sigma_pixel**2`` from the robust diagonal-band noise levels of the frames and of their
    4x4 means (1 for independent noise); median over frames, capped at 256. Clipped blocks are left out."""
    factors = []
    for z in stabilised:
        z = np.asarray(z, np.float64)
        valid = unclipped_mask(z)
        binned, valid_binned = _bin_with_mask(z, valid, 4)
        fine, coarse = _haar_diagonal_sigma(z, valid), _haar_diagonal_sigma(binned, valid_binned)
        if fine > 0 and coarse > 0:
            factors.append(16.0 * coarse**2 / fine**2)
    return float(np.clip(np.median(factors), 1.0, 256.0)) if factors else 1.0


def unclipped_mask(z: np.ndarray) -> np.ndarray | None:
    """Mask of the pixels of ``z`` (any monotonic transform of the frame) not at a clipped level, or None."""
    low, high = _clip_levels([z], None)
    if low is None and high is None:
        return None
    valid = np.ones(z.shape, bool)
    if low is not None:
        valid &= z > low
    if high is not None:
        valid &= z < high
    return valid


def _bin_with_mask(z: np.ndarray, valid: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean of ``k``x``k`` blocks of ``z`` (cropped to a multiple of ``k``), and which blocks are wholly valid."""
    h, w = (z.shape[-2] // k) * k, (z.shape[-1] // k) * k
    shape = (*z.shape[:-2], h // k, k, w // k, k)
    binned = z[..., :h, :w].reshape(shape).mean(axis=(-3, -1))
    # all() over axes gives an array (the stubs also allow a numpy bool scalar)
    return binned, None if valid is None else cast(np.ndarray, valid[..., :h, :w].reshape(shape).all(axis=(-3, -1)))


def _even_size(z: np.ndarray) -> np.ndarray:
    """``z`` cropped to even height and width (the Haar band needs 2x2 blocks)."""
    return z[..., : (z.shape[-2] // 2) * 2, : (z.shape[-1] // 2) * 2]


def bin4(frame: np.ndarray) -> np.ndarray:
    """Mean of 4x4 blocks (the frame cropped to a multiple of 4): noise correlated over a few pixels is nearly
    independent at this scale, and its variance is 1/16 of the equal-power independent noise's."""
    return _bin_with_mask(np.asarray(frame, np.float64), None, 4)[0].astype(np.float32)


def is_correlated(ratio: float) -> bool:
    """Whether a :func:`noise_correlation_ratio` means spatially correlated noise."""
    return not math.isnan(ratio) and ratio > CORRELATED_NOISE_RATIO


def _haar_diagonal_sigma(z: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Robust noise level (MAD) of the finest Haar diagonal band, over the 2x2 blocks wholly ``valid``."""
    z = _even_size(z)
    hh = 0.5 * (z[..., 0::2, 0::2] - z[..., 1::2, 0::2] - z[..., 0::2, 1::2] + z[..., 1::2, 1::2])
    if valid is not None:
        v = _even_size(valid)
        hh = hh[v[..., 0::2, 0::2] & v[..., 1::2, 0::2] & v[..., 0::2, 1::2] & v[..., 1::2, 1::2]]
        if hh.size < 64:
            return math.nan
    return float(np.median(np.abs(hh)) / 0.6745)


def _keep_in_range(norm: Normalizer, sample: np.ndarray, fit: NoiseFit) -> Normalizer:
    """Shift a dark level above the backbone's range back into it; flag signal above the range."""
    stab = norm.to_stabilised(sample)
    dark, bright = np.percentile(stab, (0.5, 99.9))
    if dark > MAX_DARK_GAT:
        if not norm.has_pixel_maps and norm.offset == 0.0:
            # A vanishing fitted slope makes the transform's constant huge (float32 loses the noise in it): use the
            # smallest slope that changes the modelled variance by at most 1 % across the frames' range.
            x_lo, x_mid, x_hi = np.percentile(sample, (0.5, 50.0, 99.9))
            var_mid = fit.a_adu * x_mid + fit.b_adu
            a_new = max(fit.a_adu, 0.01 * var_mid / max(float(x_hi - x_lo), 1e-12))
            b_new = var_mid - a_new * x_mid
            if a_new > fit.a_adu and var_mid > 0:
                norm = norm.copy(gain=float(a_new), noise_b=float(b_new / a_new**2))
                stab = norm.to_stabilised(sample)
                dark, bright = np.percentile(stab, (0.5, 99.9))
        shift = float(dark - TRAINED_DARK_GAT)
        norm = norm.copy(shift=shift)
        # two causes, one fix: a bright background (many photons even in the darkest pixels) or noise nearly
        # independent of the signal (8-bit renders, read noise), which the variance model below tells apart
        fit.warnings.append(f"the darkest pixels lie {shift:.1f} noise units above the dark level the backbone was "
                            f"trained on (a bright background, or noise nearly independent of the signal: var = "
                            f"{fit.a_adu:.3g} * x {fit.b_adu:+.3g}); the stabilised values are shifted down by that "
                            "much (noise size unchanged)")
        bright -= shift
    fit.bright_gat = float(bright)
    limit = BRIGHT_TOLERANCE * TRAINED_BRIGHT_GAT
    if bright > limit:
        electrons = (bright / 2.0) ** 2
        fit.in_range = False
        fit.warnings.append(f"the brightest pixels carry about {electrons:,.0f} photoelectrons, above the backbone's "
                            f"training range (up to about {(limit / 2) ** 2:,.0f}): at this signal the raw frames are "
                            "already nearly noise-free and denoising could only lose detail")
    return norm


def normalizer_for(frames: Sequence[np.ndarray], *, like: Normalizer | None = None, calibration: Any = None,
                   saturation: float | None = None, same_field: bool = False, averaged: int = 1) -> Normalizer:
    """:func:`fit_noise_model`'s normaliser alone (for callers that need nothing else)."""
    return fit_noise_model(frames, like=like, calibration=calibration, saturation=saturation, same_field=same_field,
                           averaged=averaged).normalizer
