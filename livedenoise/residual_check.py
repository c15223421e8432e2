"""Is a denoised frame consistent with the noise model? The first piece of a hallucination guard.

A denoiser that works removes noise and nothing else, so the residual ``raw - denoised``, taken in
the variance-stabilised domain of the frame's noise model (where the noise has standard deviation 1
at every level), must look like that noise:

- ``noise_scale``: the noise of the *raw* frame measured in stabilised units, independently of the
  network (second differences, measured as the single-image fit measures them:
  :func:`livedenoise.noise_model.stabilised_noise`). About 1
  when the noise model is right; far from 1 means the network was told the wrong noise level, and
  its output cannot be trusted whatever it looks like.
- ``residual_sd``: the standard deviation of the residual. A denoiser removes at most the noise
  (about 1), so much more than 1 means it also removed signal or changed intensities.
- ``bias``: the mean residual in stabilised units. Denoising must not change the mean brightness;
  a bias of a sizeable fraction of the noise means a wrong inverse, out-of-range inputs or a broken
  model.
- ``structure``: how much the residual's local energy follows the image's local detail (correlation
  of 8x8-block residual energy with 8x8-block gradient energy of the denoised frame). Noise is
  independent of the image; a denoiser that erases edges or invents detail leaves a residual that
  lives where the structure is.

Non-finite output fails at once. Thresholds were set on simulated frames with known truth
(``tests/test_residual_check.py`` shows a correct model passing and a wrong noise model, an
out-of-range input and a broken model failing).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from livedenoise.normalization import Normalizer

#: Accepted range of the raw frame's noise in stabilised units (1 when the noise model is right).
NOISE_SCALE_RANGE = (0.7, 1.45)
#: Largest residual standard deviation a denoiser that removes only noise can leave.
MAX_RESIDUAL_SD = 1.35
#: Largest |mean residual| (stabilised units) before the output's brightness is called changed.
MAX_BIAS = 0.25
#: Largest correlation of residual energy with image detail (8x8 blocks).
MAX_STRUCTURE = 0.6
_BLOCK = 8


@dataclass
class ResidualCheck:
    """Outcome of :func:`check_residual`; ``message`` is one sentence, empty when ``ok``."""

    ok: bool
    noise_scale: float
    residual_sd: float
    bias: float
    structure: float
    frames: int
    problems: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        if self.ok:
            return ""
        return "the denoised output is not consistent with the noise model: " + "; ".join(self.problems)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["message"] = self.message
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}

    @staticmethod
    def combine(checks: Sequence[ResidualCheck]) -> ResidualCheck:
        """One verdict for many frames or blocks: medians of the indices, every distinct problem kept."""
        checks = [c for c in checks if c is not None]
        if not checks:
            raise ValueError("no residual checks to combine")
        problems: list[str] = []
        kinds: set[str] = set()
        for c in checks:
            for p in c.problems:
                kind = p[:16]  # one sentence per kind of problem (the numbers differ from frame to frame)
                if kind not in kinds:
                    kinds.add(kind)
                    problems.append(p)
        med = lambda name: float(np.nanmedian([getattr(c, name) for c in checks]))  # noqa: E731
        return ResidualCheck(not problems, med("noise_scale"), med("residual_sd"), med("bias"), med("structure"),
                             int(sum(c.frames for c in checks)), problems)


def residual_map(raw: np.ndarray, denoised: np.ndarray, normalizer: Normalizer) -> np.ndarray:
    """``raw - denoised`` in stabilised units (noise standard deviation 1), float32, same shape.

    What the viewer shows as "residual": noise only, if the denoiser is right.
    """
    if not normalizer.vst:
        return ((np.asarray(raw, np.float64) - np.asarray(denoised, np.float64)) / normalizer.gain).astype(np.float32)
    return (normalizer.to_stabilised(raw)
            - normalizer.to_stabilised_output(np.nan_to_num(denoised))).astype(np.float32)


def _block_means(values: np.ndarray, block: int = _BLOCK) -> np.ndarray:
    h, w = (values.shape[0] // block) * block, (values.shape[1] // block) * block
    v = values[:h, :w]
    return v.reshape(h // block, block, w // block, block).mean(axis=(1, 3))


def check_residual(raw: np.ndarray, denoised: np.ndarray, normalizer: Normalizer) -> ResidualCheck:
    """Check one 2-D frame (or an (..., Y, X) stack, checked frame by frame and combined)."""
    from livedenoise.noise_model import stabilised_noise

    raw = np.asarray(raw)
    den = np.asarray(denoised)
    if raw.shape != den.shape:
        raise ValueError(f"raw shape {raw.shape} differs from denoised shape {den.shape}")
    if raw.ndim > 2:
        flat_r = raw.reshape(-1, *raw.shape[-2:])
        flat_d = den.reshape(-1, *den.shape[-2:])
        return ResidualCheck.combine([check_residual(r, d, normalizer) for r, d in zip(flat_r, flat_d, strict=True)])
    if not np.isfinite(den).all():
        bad = int(den.size - np.count_nonzero(np.isfinite(den)))
        return ResidualCheck(False, math.nan, math.nan, math.nan, math.nan, 1,
                             [f"{bad} output pixel(s) are NaN or infinite (a broken model)"])
    if not normalizer.vst or min(raw.shape) < 16:
        return ResidualCheck(True, math.nan, math.nan, math.nan, math.nan, 1)
    keep = np.ones(raw.shape, bool)
    sat = normalizer.saturated_mask(raw)
    if sat is not None:
        keep &= ~sat
    t_raw = normalizer.to_stabilised(raw)
    t_den = normalizer.to_stabilised_output(den)
    r = t_raw - t_den
    from livedenoise.noise_model import bin4, is_correlated, noise_correlation_ratio, unclipped_mask

    # Pixels the *camera data* holds at a clipped level (a render's 0) lost their noise to the clipping, not to the
    # denoiser (the stabilised frame's own floor is no clipping). They are left out of the noise measurement, and
    # count as noise in the structure index (their residual energy would follow the image: none in a clipped
    # background); the bias and spread keep them (leaving them out would select positive noise).
    unclipped = unclipped_mask(np.asarray(raw))
    noise_scale = stabilised_noise(t_raw, clipped=None if unclipped is None else ~unclipped)
    energy_keep = keep if unclipped is None else keep & unclipped

    if min(raw.shape) >= 64 and is_correlated(noise_correlation_ratio([t_raw])):
        # correlated noise is modelled by its equal-power level at the 4x4 scale: measure it there
        noise_scale = 4.0 * stabilised_noise(bin4(t_raw))
    kept = r[keep]
    if kept.size < 64:
        return ResidualCheck(True, noise_scale, math.nan, math.nan, math.nan, 1)
    residual_sd = float(np.std(kept))
    bias = float(np.mean(kept))
    gy, gx = np.gradient(t_den)
    detail = _block_means(gy**2 + gx**2)
    energy = _block_means(np.where(energy_keep, r**2, 1.0))
    structure = 0.0
    if detail.size >= 16 and np.std(detail) > 0 and np.std(energy) > 0:
        structure = float(np.corrcoef(detail.ravel(), energy.ravel())[0, 1])
    problems = []
    lo, hi = NOISE_SCALE_RANGE
    if math.isfinite(noise_scale) and not (lo <= noise_scale <= hi):
        problems.append(f"the frame's noise is {noise_scale:.2f}x what the noise model predicts (expected "
                        f"{lo}-{hi}x; a camera calibration (--camera-calibration) fixes this)")
    if residual_sd > MAX_RESIDUAL_SD:
        problems.append(f"the residual is {residual_sd:.2f} noise standard deviations (expected at most "
                        f"{MAX_RESIDUAL_SD}: signal was removed)")
    if abs(bias) > MAX_BIAS:
        problems.append(f"the output's brightness differs from the input's by {bias:+.2f} noise standard deviations")
    if structure > MAX_STRUCTURE:
        problems.append(f"the residual follows the image's structure (correlation {structure:.2f}, expected below "
                        f"{MAX_STRUCTURE})")
    return ResidualCheck(not problems, noise_scale, residual_sd, bias, structure, 1, problems)
