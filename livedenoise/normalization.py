"""The one intensity normalisation shared by training and inference.

Why one class: a network only works on data normalised exactly as during its training, so the
:class:`Normalizer` is fitted once, stored inside every checkpoint, and applied by both the
training loop and the :class:`~livedenoise.inference.Denoiser`.

Pipeline (``forward``), for raw camera values ``x`` in ADU:

1. ``e = (x - offset) / gain`` -- photoelectrons when the camera is calibrated.
2. With ``vst=True`` the generalised Anscombe transform (GAT) for Poisson-Gaussian noise with
   ``var(e) = noise_a * E[e] + noise_b``::

       y = (2 / noise_a) * sqrt(max(noise_a * e + 3/8 * noise_a**2 + noise_b, 0))

   which turns the signal-dependent noise into noise of standard deviation ~1 at every level, so
   one backbone serves every photon level and camera. ``vst=False`` keeps ``y = e``.
3. ``y / scale``, where ``scale`` is the 99.5th percentile of ``|y|`` over the fitting data, so
   the network sees values in about [0, 1] and noise of standard deviation ``1/scale``.

``inverse`` undoes the three steps. Which inverse of the GAT depends on what the network
predicts (``Normalizer.inversion``):

- ``"algebraic"`` (supervised backbones and every fine-tune of them, whose target is the transform of a
  *clean* image): ``inverse(forward(x)) == x`` wherever ``noise_a*e + 3/8*noise_a**2 + noise_b > 0``;
  values below that floor map to the floor.
- ``"unbiased"`` (networks that predict ``E[GAT(noisy)]``: self-supervised fine-tunes written by releases before
  2026-12-05, which retrained the network to that target; :mod:`livedenoise.training.gat_target`): the closed-form
  approximation of the exact unbiased inverse (Makitalo & Foi 2011, 2013); the algebraic inverse of
  such an output is biased by about -0.25 e- at every level (-25 % at 1 e-).

``shift`` (GAT units, usually 0) is subtracted after the transform. It exists for nearly
signal-independent noise (8-bit renders, read-noise-dominated cameras): there the fitted Poisson
slope is tiny, the GAT adds a large constant and the whole image would sit far above every input
the backbone was trained on. Subtracting a constant keeps the noise exactly 1 in GAT units at every
level, so it changes nothing but the level the network sees (see
:mod:`livedenoise.noise_model`).

Per-pixel camera maps (``pixel_offset``/``pixel_gain``, numpy arrays of the sensor's shape, from a
:class:`~livedenoise.camera_calibration.CameraCalibration`) replace the scalar ``offset``/``gain`` for
frames of that shape, so the camera's fixed pattern is removed before the network sees it. The output
does not get the pattern back: :meth:`inverse` maps photoelectrons to ADU through the scalar ``offset``
and ``gain`` (a calibration's medians), the values a camera without a fixed pattern would record. Putting
the per-pixel maps back, as an earlier release did, re-added the pattern the network had been spared:
against the simulator's pattern-free sample that cost 13 dB on average over 1-100 photons, while the flat
output gains 0.76 dB over no calibration at all (``benchmarks/bench_calibration.py``; README, "Camera
calibration"). Denoised values are therefore compared with raw ones through :meth:`to_stabilised_output`,
which reads them the same flat way. The maps are
not part of :meth:`to_dict` (a checkpoint is camera-independent); the provenance records the
calibration file they came from.

Uncalibrated data (no ``offset``/``gain`` given to :meth:`Normalizer.fit`):
:func:`estimate_poisson_gaussian` fits ``var(x) = a * mean(x) + b`` in ADU; then ``offset = 0``,
``gain = a``, ``noise_a = 1`` and ``noise_b = b / a**2``. With a true camera offset ``o``, gain
``g`` and read variance ``s2``, ``a = g`` and ``b = s2 - g*o``: ``b`` is usually *negative*
because it absorbs the unknown offset, and the GAT argument equals the calibrated one exactly,
so this is not an approximation.

Saturated pixels (``x >= saturation`` when ``saturation`` is set) are not altered by ``forward``
(their noise statistics are meaningless, but the network needs *some* value there);
:meth:`Normalizer.saturated_mask` flags them and the ``Denoiser`` returns the raw value at those
pixels, so a saturated region is never "denoised" into a plausible-looking but invented value.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from livedenoise.errors import ConfigError, InputDataError

log = logging.getLogger("livedenoise")

#: Percentile of the transformed data used as ``scale``.
SCALE_PERCENTILE = 99.5
#: How the GAT is inverted: see the module docstring.
INVERSIONS = ("algebraic", "unbiased")
#: GAT value of zero photoelectrons without read noise, the floor of the unbiased inverse.
_GAT_ZERO = 2.0 * math.sqrt(3.0 / 8.0)
#: At most this many values are used to compute percentiles and noise fits (random, seeded subset).
_MAX_SAMPLES = 2_000_000


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def check_image(x: Any, name: str = "image", *, ndim: int | None = None, min_ndim: int | None = None) -> np.ndarray:
    """Return ``x`` as a numeric numpy array, or raise :class:`InputDataError` saying what is wrong.

    Accepted: integer or floating dtypes (not bool, complex or object), all values finite.
    ``ndim`` demands an exact number of dimensions, ``min_ndim`` a minimum.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # e.g. ragged sequences
        raise InputDataError(f"The {name} could not be read as an array ({exc}); "
                             "expected a numeric 2-D image.") from exc
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise InputDataError(
            f"The {name} has dtype {arr.dtype}, which is not numeric; expected integer or floating-point pixel values."
        )
    if ndim is not None and arr.ndim != ndim:
        raise InputDataError(f"The {name} has shape {arr.shape} ({arr.ndim}-D); expected a {ndim}-D array.")
    if min_ndim is not None and arr.ndim < min_ndim:
        raise InputDataError(f"The {name} has shape {arr.shape}; expected at least {min_ndim} dimensions (..., Y, X).")
    if arr.size == 0:
        raise InputDataError(f"The {name} is empty (shape {arr.shape}); expected at least one pixel.")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputDataError(f"The {name} contains {bad} NaN or infinite value(s); expected finite pixel values.")
    return arr


def _as_frames(frames: Sequence[np.ndarray] | np.ndarray, name: str) -> list[np.ndarray]:
    """Turn a 2-D image, an (..., Y, X) stack or a sequence of 2-D images into a list of 2-D arrays."""
    if isinstance(frames, np.ndarray) or torch.is_tensor(frames):
        arr = check_image(np.asarray(frames), name, min_ndim=2)
        return list(arr.reshape(-1, *arr.shape[-2:]))
    out: list[np.ndarray] = []
    for i, f in enumerate(frames):
        arr = check_image(f, f"{name} #{i}", min_ndim=2)
        out.extend(arr.reshape(-1, *arr.shape[-2:]))
    if not out:
        raise InputDataError(f"The {name} sequence is empty; expected at least one 2-D image.")
    return out


def _subsample(values: np.ndarray, limit: int = _MAX_SAMPLES, seed: int = 0) -> np.ndarray:
    if values.size <= limit:
        return values
    rng = np.random.default_rng(seed)
    return values[rng.choice(values.size, size=limit, replace=False)]


# --------------------------------------------------------------------------------------------
# noise estimation
# --------------------------------------------------------------------------------------------
def _highpass_and_local_mean(frame: np.ndarray, mean_size: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Noise residual ``r`` and local mean ``m`` on the valid (H-2, W-2) region.

    ``r`` is the separable second difference ``[1,-2,1] x [1,-2,1] / 6``: it cancels any locally
    bilinear signal, and for independent pixel noise ``E[r^2]`` is the (weighted) average of the
    3x3 neighbourhood's variances. ``m`` is a ``mean_size`` box mean centred on the same pixel:
    a wide window matters because binning by a *noisy* mean makes bins select noise
    fluctuations, which flattens the fitted slope (regression dilution) at low photon counts;
    a 7x7 mean has 1/49 of the pixel variance, while smooth signal keeps ``E[m]`` equal to the
    3x3 mean.
    """
    from scipy.ndimage import uniform_filter

    d = frame[:-2] - 2.0 * frame[1:-1] + frame[2:]
    r = (d[:, :-2] - 2.0 * d[:, 1:-1] + d[:, 2:]) / 6.0
    m = uniform_filter(frame, size=mean_size, mode="reflect")[1:-1, 1:-1]
    return r, m


_CLIP_SIGMAS = 3.5
#: E[r^2 | |r| < c*sigma] / sigma^2 for a Gaussian with c = 3.5 (undoes the bias of clipping).
_CLIP_CORRECTION = 1.0 - 2.0 * _CLIP_SIGMAS * math.exp(-0.5 * _CLIP_SIGMAS**2) / math.sqrt(2 * math.pi) / math.erf(
    _CLIP_SIGMAS / math.sqrt(2)
)


def _robust_variance(r: np.ndarray) -> float:
    """Variance of zero-mean residuals, robust to the few large ones that structure edges leave.

    A plain median estimator (``(median|r|/0.6745)^2``) is biased when the noise is not Gaussian
    (photon counts of a few electrons are lumpy); so the median only sets a clipping level
    (3.5 robust sigmas), and the variance is the mean of ``r^2`` below it, corrected for the
    Gaussian tail that the clipping removes.
    """
    sigma = float(np.median(np.abs(r))) / 0.6744897501960817
    if sigma <= 0:
        sigma = float(np.sqrt(np.mean(r**2)))
        if sigma <= 0:
            return 0.0
    kept = r[np.abs(r) < _CLIP_SIGMAS * sigma]
    if kept.size < 0.5 * r.size:  # pathological (mostly ties at zero): fall back to the plain mean
        return float(np.mean(r**2))
    return float(np.mean(kept**2)) / _CLIP_CORRECTION


def estimate_poisson_gaussian(
    frame: np.ndarray, *, saturation: float | None = None, n_bins: int = 24, min_per_bin: int = 300
) -> tuple[float, float]:
    """Estimate ``(a, b)`` with ``var(x) = a * E[x] + b`` (input units) from the image itself.

    ``frame`` is a 2-D image or an (..., Y, X) stack (pooled). Method: a high-pass residual
    (second differences, see :func:`_highpass_and_local_mean`) and the matching local mean;
    pixels are binned by local mean into equally populated bins; each bin's variance is the
    mean of ``r^2`` after clipping at 3.5 robust sigmas (edges of structures leave a few large
    residuals, which the clipping ignores; see :func:`_robust_variance`); a weighted least-squares line
    through the bins (weights ``n / var^2``, re-weighted twice from the fitted line) gives ``a`` and ``b``.
    ``a`` is clipped to a small positive floor (``1e-6 * max(1, |median level|)``), which is what a
    noise-free (e.g. constant) image returns, together with ``b = 0``. Windows touching ``saturation`` are ignored.
    """
    arr = check_image(frame, "image for noise estimation", min_ndim=2)
    return _estimate_from_frames(list(arr.reshape(-1, *arr.shape[-2:])), saturation, n_bins, min_per_bin)


def _estimate_from_frames(
    frames: list[np.ndarray], saturation: float | None, n_bins: int = 24, min_per_bin: int = 300
) -> tuple[float, float]:
    """Body of :func:`estimate_poisson_gaussian` for a list of 2-D frames (shapes may differ)."""
    rs, ms = [], []
    for f in frames:
        if f.shape[-1] < 3 or f.shape[-2] < 3:
            raise InputDataError(
                f"An image for noise estimation has shape {f.shape}; expected at least 3x3 pixels per frame."
            )
        f64 = f.astype(np.float64, copy=False)
        r, m = _highpass_and_local_mean(f64)
        if saturation is not None:
            sat = f64 >= saturation
            s = sat[:-2] | sat[1:-1] | sat[2:]
            keep = ~(s[:, :-2] | s[:, 1:-1] | s[:, 2:])
            r, m = r[keep], m[keep]
        rs.append(r.ravel())
        ms.append(m.ravel())
    r = np.concatenate(rs)
    m = np.concatenate(ms)
    if r.size == 0:
        raise InputDataError("Every pixel of the image for noise estimation is saturated; expected unsaturated pixels.")
    idx = _subsample(np.arange(r.size))
    r, m = r[idx], m[idx]
    level = float(np.median(m))
    a_floor = 1e-6 * max(1.0, abs(level))

    bins = int(min(n_bins, max(1, r.size // min_per_bin)))
    order = np.argsort(m, kind="stable")
    centres, variances, counts = [], [], []
    for chunk in np.array_split(order, bins):
        if chunk.size == 0:
            continue
        centres.append(float(np.mean(m[chunk])))
        variances.append(_robust_variance(r[chunk]))
        counts.append(chunk.size)
    c = np.asarray(centres)
    v = np.asarray(variances)
    n = np.asarray(counts, dtype=np.float64)

    if c.size < 2 or np.ptp(c) <= 1e-9 * max(1.0, float(np.abs(c).max())):
        # No spread of intensities: the slope cannot be separated from the intercept.
        var = float(np.average(v, weights=n))
        a = max(var / level, a_floor) if level > 0 else a_floor
        b = 0.0 if a == a_floor else var - a * level
        return float(a), float(b)

    fitted = np.maximum(v, 1e-12)
    a, b = 0.0, 0.0
    for _ in range(3):
        w = n / np.maximum(fitted, 1e-12 * max(1.0, float(v.max()))) ** 2
        design = np.stack([c, np.ones_like(c)], axis=1) * np.sqrt(w)[:, None]
        (a, b), *_ = np.linalg.lstsq(design, v * np.sqrt(w), rcond=None)
        fitted = np.abs(a * c + b)
    if not np.isfinite(a) or not np.isfinite(b):  # pragma: no cover - defensive
        raise InputDataError("The noise of the image could not be estimated (the fit did not converge).")
    if a < a_floor:
        a = a_floor
        b = float(np.average(v - a * c, weights=n))
    return float(a), float(b)


def _unbiased_poisson_mean(d: Any) -> Any:
    """Makitalo & Foi's closed-form unbiased inverse of the Anscombe transform (before its floor at 0): the Poisson
    mean whose transformed noisy values average ``d`` (``d >= _GAT_ZERO``; numpy arrays or tensors)."""
    c = math.sqrt(1.5)
    r = 1.0 / d  # Horner's form in 1/d: a fine-tune evaluates this on every pixel of every step
    return 0.25 * d * d - 0.125 + r * (0.25 * c + r * (-1.375 + r * (0.625 * c)))


def _unbiased_slope(d: Any) -> Any:
    """Derivative of :func:`_unbiased_poisson_mean` (>= 0.88 on ``d >= _GAT_ZERO``: the inverse is monotone)."""
    c = math.sqrt(1.5)
    r = 1.0 / d
    return 0.5 * d + r * r * (-0.25 * c + r * (2.75 - r * (1.875 * c)))


def gat_torch(e: torch.Tensor, noise_b: Any, noise_a: float = 1.0) -> torch.Tensor:
    """Generalised Anscombe transform of photoelectrons ``e`` with ``var(e) = noise_a * E[e] + noise_b``.

    ``noise_b`` may be a tensor (one value per sample, as the synthetic training pairs draw them). The one
    formula behind :meth:`Normalizer.forward_torch` and :mod:`livedenoise.training.synthetic`.
    """
    return (2.0 / noise_a) * torch.sqrt(torch.clamp(noise_a * e + 0.375 * noise_a**2 + noise_b, min=0.0))


# --------------------------------------------------------------------------------------------
# the normalizer
# --------------------------------------------------------------------------------------------
@dataclass
class Normalizer:
    """ADU -> network units and back. See the module docstring for the exact maths.

    Attributes: ``offset`` (ADU), ``gain`` (ADU per photoelectron, or the fitted Poisson slope when
    uncalibrated), ``noise_a``/``noise_b`` (``var(e) = noise_a*E[e] + noise_b`` after the gain step;
    ``noise_b`` may be negative when it absorbs an unknown offset), ``vst`` (apply the GAT),
    ``scale`` (divisor after the transform), ``saturation`` (ADU level at or above which pixels
    are flagged as saturated, or ``None``).
    """

    offset: float = 0.0
    gain: float = 1.0
    noise_a: float = 1.0
    noise_b: float = 0.0
    vst: bool = True
    scale: float = 1.0
    saturation: float | None = None
    inversion: str = "algebraic"
    shift: float = 0.0
    pixel_offset: np.ndarray | None = field(default=None, repr=False, compare=False)
    pixel_gain: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.inversion not in INVERSIONS:
            raise ConfigError(f"Normalizer.inversion = {self.inversion!r} is unknown; "
                              f"expected one of {', '.join(INVERSIONS)}.")
        if (self.pixel_offset is None) != (self.pixel_gain is None):
            raise ConfigError("Normalizer per-pixel maps need both pixel_offset and pixel_gain.")
        if self.pixel_offset is not None:
            self.pixel_offset = np.asarray(self.pixel_offset, np.float32)
            self.pixel_gain = np.asarray(self.pixel_gain, np.float32)
            if self.pixel_offset.shape != self.pixel_gain.shape or self.pixel_offset.ndim != 2:
                raise ConfigError(f"Normalizer per-pixel maps have shapes {self.pixel_offset.shape} and "
                                  f"{self.pixel_gain.shape}; expected two 2-D maps of the sensor's shape.")
            if not (np.isfinite(self.pixel_gain).all() and (self.pixel_gain > 0).all()
                    and np.isfinite(self.pixel_offset).all()):
                raise ConfigError("Normalizer per-pixel gain map must be finite and positive, the offset map finite.")
        for name in ("offset", "gain", "noise_a", "noise_b", "scale", "shift"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"Normalizer.{name} = {value!r} is not a number; expected a finite float.") from exc
            if not math.isfinite(value):
                raise ConfigError(f"Normalizer.{name} = {value!r} is not finite; expected a finite float.")
            setattr(self, name, value)
        for name in ("gain", "noise_a", "scale"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"Normalizer.{name} = {getattr(self, name)!r} must be positive.")
        self.vst = bool(self.vst)
        if self.saturation is not None:
            self.saturation = float(self.saturation)
            if not math.isfinite(self.saturation):
                raise ConfigError(f"Normalizer.saturation = {self.saturation!r} must be finite or None.")

    # ---- maths (numpy, float64 inside) -------------------------------------------------
    def _floor_arg(self) -> float:
        return 0.375 * self.noise_a**2 + self.noise_b

    def _maps_for(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        """(offset, gain) for frames of ``shape``: the per-pixel maps when they match, else the scalars."""
        if self.pixel_offset is not None and tuple(shape[-2:]) == self.pixel_offset.shape:
            return self.pixel_offset, self.pixel_gain
        return self.offset, self.gain

    @property
    def has_pixel_maps(self) -> bool:
        return self.pixel_offset is not None

    def share_below_dark_level(self, frame: np.ndarray, samples: int = 64) -> float:
        """The share of a 2-D frame's pixels that :meth:`forward` clips at zero (below the dark level), from a grid
        of about ``samples`` x ``samples`` pixels. Near 0 for frames of the camera this normaliser describes; most of
        the frame for data of another camera or already offset-subtracted."""
        step = (max(1, frame.shape[-2] // samples), max(1, frame.shape[-1] // samples))
        offset, gain = self._maps_for(frame.shape)
        grid = (slice(None, None, step[0]), slice(None, None, step[1]))
        if np.ndim(offset):
            offset, gain = np.asarray(offset)[grid], np.asarray(gain)[grid]
        e = (np.asarray(frame)[grid].astype(np.float64) - offset) / gain
        return float(np.mean(self.noise_a * e + self._floor_arg() < 0))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Raw values (ADU) -> network input (float32). Any shape."""
        arr = check_image(x, "image to normalise")
        return self._forward(arr, *self._maps_for(arr.shape))

    def _forward(self, arr: np.ndarray, offset: Any, gain: Any) -> np.ndarray:
        """:meth:`forward` with the given offset and gain (per-pixel maps for raw frames, scalars for outputs)."""
        e = (arr.astype(np.float64) - offset) / gain
        if self.vst:
            y = (2.0 / self.noise_a) * np.sqrt(np.maximum(self.noise_a * e + self._floor_arg(), 0.0)) - self.shift
        else:
            y = e
        return (y / self.scale).astype(np.float32)

    def to_stabilised(self, x: np.ndarray) -> np.ndarray:
        """Raw values -> the variance-stabilised domain (noise standard deviation 1), float64."""
        return np.asarray(self.forward(x), np.float64) * self.scale

    def to_stabilised_output(self, x: np.ndarray) -> np.ndarray:
        """Values :meth:`inverse` produced (denoised ADU, without the camera's fixed pattern) -> the same domain as
        :meth:`to_stabilised` of the raw frame, so that the two may be subtracted pixel by pixel."""
        arr = check_image(x, "denoised image")
        return np.asarray(self._forward(arr, self.offset, self.gain), np.float64) * self.scale

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Network output -> values in the input units (ADU), float32. Any shape."""
        arr = np.asarray(y, dtype=np.float64) * self.scale
        if self.vst:
            arr = arr + self.shift
            if self.inversion == "unbiased":
                z = np.maximum(_unbiased_poisson_mean(np.maximum(arr, _GAT_ZERO)), 0.0)
                e = self.noise_a * z - self.noise_b / self.noise_a
            else:
                arr = np.maximum(arr, 0.0)
                e = ((self.noise_a * arr / 2.0) ** 2 - self._floor_arg()) / self.noise_a
        else:
            e = arr
        return (e * self.gain + self.offset).astype(np.float32)  # no fixed pattern: see the module docstring

    # ---- maths (torch, same formulas, computed in float32 on the tensor's device) ----------
    def _maps_torch(self, x: torch.Tensor) -> tuple[Any, Any]:
        offset, gain = self._maps_for(tuple(x.shape))
        if isinstance(offset, np.ndarray):
            return torch.from_numpy(offset).to(x.device), torch.from_numpy(gain).to(x.device)
        return offset, gain

    def electrons_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Raw values -> ``(x - offset) / gain`` (per-pixel maps where they fit), float32: linear, and free of the
        camera's fixed offset and gain pattern, so pixels of different sensor positions may be averaged."""
        offset, gain = self._maps_torch(x)
        return (x.to(torch.float32) - offset) / gain

    def output_from_electrons_torch(self, e: torch.Tensor) -> torch.Tensor:
        """Photoelectrons -> output ADU through the scalar offset and gain: what a camera without a fixed pattern
        would record (what :meth:`inverse_torch` returns; see the module docstring)."""
        return e * self.gain + self.offset

    def forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward` on a tensor (float32, tensor's device; no validation)."""
        e = self.electrons_torch(x)
        if self.vst:
            e = gat_torch(e, self.noise_b, self.noise_a) - self.shift
        return e / self.scale

    def inverse_torch(self, y: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`inverse` on a tensor (float32, tensor's device)."""
        v = y.to(torch.float32) * self.scale
        if self.vst:
            v = v + self.shift
            if self.inversion == "unbiased":
                z = torch.clamp(_unbiased_poisson_mean(torch.clamp(v, min=_GAT_ZERO)), min=0.0)
                v = self.noise_a * z - self.noise_b / self.noise_a
            else:
                v = torch.clamp(v, min=0.0)
                v = ((self.noise_a * v / 2.0) ** 2 - self._floor_arg()) / self.noise_a
        return self.output_from_electrons_torch(v)

    def expected_gat_torch(self, y: torch.Tensor) -> torch.Tensor:
        """A network output that predicts the GAT *of the mean* (what a supervised backbone predicts, inverted
        algebraically) -> the mean *of the GAT* of the noisy pixel it implies, in network units (differentiable).

        Why: blind-spot and SURE objectives compare an output with noisy pixels, whose expectation in the
        stabilised domain is ``E[GAT(noisy)]``; that sits below ``GAT(E[noisy])`` by the transform's bias,
        0.14-0.19 noise standard deviations at 1-3 photoelectrons (where most of a fluorescence image lies). Scored
        against noisy pixels directly, a supervised backbone is charged for that bias, a self-supervised
        fine-tune spends its steps learning it, and the SURE check credited a fit with removing it (measured:
        SURE -20 % while the output lost 0.4 dB against the sample). Read through this map, backbone and fine-tune
        are scored on the same target and the fine-tuned network keeps predicting what the algebraic inverse
        expects. ``v`` (GAT units) -> ``z = v²/4 - 3/8`` (the photon-count mean in the Anscombe domain: independent
        of ``noise_a``/``noise_b``, see :meth:`inverse`) -> the ``d`` with ``unbiased inverse(d) = z`` (Newton
        steps; the inverse is monotone, slope >= 0.88). Below the zero-photon value the output passes unchanged.
        Identity without the GAT."""
        if not self.vst:
            return y
        v = y * self.scale + self.shift
        z = torch.clamp(0.25 * v * v - 0.375, min=0.0)
        with torch.no_grad():
            d = torch.clamp(2.0 * torch.sqrt(z + 0.125), min=_GAT_ZERO)  # the inverse's large-count asymptote
            for _ in range(2):  # from the asymptote, 2 steps reach float32's resolution (3e-5 GAT units at most)
                d = torch.clamp(d - (_unbiased_poisson_mean(d) - z) / _unbiased_slope(d), min=_GAT_ZERO)
            slope = _unbiased_slope(d)
        d = d - (_unbiased_poisson_mean(d) - z) / slope  # one more step with gradients: dd/dz = 1/slope
        return (torch.where(v >= _GAT_ZERO, d, v) - self.shift) / self.scale

    def saturated_mask(self, x: np.ndarray) -> np.ndarray | None:
        """Boolean mask of saturated pixels, or ``None`` when no saturation level is set."""
        if self.saturation is None:
            return None
        return np.asarray(x) >= self.saturation

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise in network units (exact for ``vst=True``, ~1/scale)."""
        return 1.0 / self.scale if self.vst else float("nan")

    def describe(self) -> str:
        """One line for logs and reports."""
        sat = "none" if self.saturation is None else f"{self.saturation:g}"
        maps = (f" (per-pixel maps {self.pixel_offset.shape[1]}x{self.pixel_offset.shape[0]})"
                if self.pixel_offset is not None else "")
        extra = ((f", shift={self.shift:g}" if self.shift else "")
                 + (", unbiased inverse" if self.inversion == "unbiased" else ""))
        return (
            f"offset={self.offset:g} ADU, gain={self.gain:g} ADU/e{maps}, var(e)={self.noise_a:g}*e{self.noise_b:+g}, "
            f"vst={'GAT' if self.vst else 'off'}, scale={self.scale:g}, saturation={sat}{extra}"
        )

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (plain floats, bool, None)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in _NOT_SERIALISED}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Normalizer):
            return NotImplemented
        same_maps = all(
            (a is None and b is None)
            or (a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b))
            for a, b in ((self.pixel_offset, other.pixel_offset), (self.pixel_gain, other.pixel_gain)))
        return self.to_dict() == other.to_dict() and same_maps

    __hash__ = None  # type: ignore[assignment]  # mutable

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        """Inverse of :meth:`to_dict`; unknown keys are ignored with a warning (newer files)."""
        if not isinstance(data, dict):
            raise ConfigError(f"Normalizer data {data!r} is not a mapping; expected a dict from Normalizer.to_dict().")
        known = {f.name for f in fields(cls)} - _NOT_SERIALISED
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning("Ignoring unknown normalizer field(s): %s", ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})

    def copy(self, **changes: Any) -> Normalizer:
        """A copy with some fields changed."""
        return replace(self, **changes)

    # ---- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        frames: Sequence[np.ndarray] | np.ndarray,
        *,
        offset: float | None = None,
        gain: float | None = None,
        read_var: float | None = None,
        vst: bool = True,
        saturation: float | None = None,
    ) -> Normalizer:
        """Fit a normalizer to raw frames (2-D image, (..., Y, X) stack, or a sequence of images).

        - ``gain`` given (camera calibration; ``offset`` in ADU, defaults to 0; ``read_var`` in
          ADU^2): ``noise_a = 1`` and ``noise_b = read_var / gain**2`` (e^2). Without
          ``read_var``, ``noise_b`` is the intercept estimated from the frames converted to e.
        - ``gain`` not given: ``(a, b) = estimate_poisson_gaussian(frames - offset)`` (``offset``
          defaults to 0, i.e. absorbed in ``b``), then ``gain = a``, ``noise_a = 1``,
          ``noise_b = b / a**2``; ``read_var`` is ignored because ``b`` already contains it.
        - ``scale``: 99.5th percentile of ``|GAT(e)|`` over the frames; if that is 0 (e.g. an all
          -dark image without the GAT) the scale is 1.

        Per-pixel calibration maps should be applied before (or reduced to their medians).
        """
        data = _as_frames(frames, "frames to fit the normalizer on")
        off = 0.0 if offset is None else float(offset)
        if gain is not None:
            g = float(gain)
            if not (math.isfinite(g) and g > 0):
                raise ConfigError(f"Camera gain {gain!r} is invalid; expected a positive number of ADU per electron.")
            if read_var is not None:
                if not (math.isfinite(float(read_var)) and float(read_var) >= 0):
                    raise ConfigError(f"Read-noise variance {read_var!r} is invalid; "
                                      "expected a non-negative number (ADU^2).")
                noise_b = float(read_var) / g**2
            else:
                sat = None if saturation is None else (float(saturation) - off) / g
                _, noise_b = _pooled_estimate([(f.astype(np.float64) - off) / g for f in data], sat)
        else:
            shifted = [f.astype(np.float64) - off for f in data]
            sat = None if saturation is None else float(saturation) - off
            a, b = _pooled_estimate(shifted, sat)
            g, noise_b = a, b / a**2
        norm = cls(offset=off, gain=g, noise_a=1.0, noise_b=noise_b, vst=vst, scale=1.0, saturation=saturation)
        values = np.concatenate([_subsample(f.ravel(), _MAX_SAMPLES // len(data) + 1) for f in data])
        transformed = np.abs(norm.forward(values).astype(np.float64))
        scale = float(np.percentile(transformed, SCALE_PERCENTILE))
        if not math.isfinite(scale) or scale <= 1e-12:
            log.info("Normalizer: the frames have no positive signal after the transform; using scale 1.")
            scale = 1.0
        norm.scale = scale
        log.debug("Fitted normalizer: %s", norm.describe())
        return norm


_NOT_SERIALISED = frozenset({"pixel_offset", "pixel_gain"})


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
        return float(value)
    return value


def _pooled_estimate(frames: list[np.ndarray], saturation: float | None) -> tuple[float, float]:
    """:func:`estimate_poisson_gaussian` pooled over 2-D frames that may differ in shape."""
    return _estimate_from_frames(frames, saturation)
