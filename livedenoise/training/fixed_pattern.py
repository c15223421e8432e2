"""The camera's fixed pattern in averaged calibration references: estimated across fields and removed.

Why: an sCMOS camera adds a per-pixel offset (and gain) pattern to every frame. Averaging frames into a
high-SNR reference removes the noise but keeps the pattern, so a pairs fine-tune learns to reproduce it,
where the backbone learned to remove it as noise (README, "Time-lapses": an adapted model 2.6 dB *worse*
against the sample at 5 photons, though better against the camera's image). The pattern sits at the same
pixels in every reference, while the sample differs between calibration fields (a live calibration takes
its pairs at stage positions apart). So the median over fields of each reference's fine detail (the
reference minus its Gaussian-blurred self) estimates the pattern, and the structure, at different pixels
in each field, drops out of the median.

Only for references of *different fields*: of one field, the median would keep the structure itself. The
callers that know their fields differ (a live session's or an attached acquisition's calibration) use it;
pairs a user hands to ``finetune`` are left as they are.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Fewer fields than this give no usable median (with two, structure of either field would remain).
MIN_FIELDS = 3
#: Scale (px) of the blur that separates fine detail (noise, the pattern, edges) from the image's shading.
DETAIL_SIGMA = 2.0


@dataclass
class FixedPatternRemoval:
    """References with the estimated pattern removed, and what was done (for the session's report)."""

    references: list[np.ndarray]
    pattern: np.ndarray | None  # the estimate subtracted (ADU, zero mean), None when nothing was removed
    fields: int
    note: str

    def describe(self) -> dict:
        p = self.pattern
        return {"removed": p is not None, "fields": self.fields, "note": self.note,
                "pattern_sd_adu": None if p is None else float(p.std())}


def estimate_fixed_pattern(references: Sequence[np.ndarray], sigma: float = DETAIL_SIGMA) -> np.ndarray:
    """The pattern common to ``references`` of different fields (ADU, zero mean): the per-pixel median of
    their fine detail."""
    from scipy.ndimage import gaussian_filter

    detail = [np.asarray(r, np.float64) - gaussian_filter(np.asarray(r, np.float64), sigma, mode="reflect")
              for r in references]
    pattern = np.median(np.stack(detail), axis=0)
    return (pattern - pattern.mean()).astype(np.float32)


def remove_fixed_pattern(references: Sequence[np.ndarray]) -> FixedPatternRemoval:
    """``references`` (2-D frames of different fields, same shape) minus their common fixed pattern.

    With fewer than :data:`MIN_FIELDS` references, or references of different shapes, nothing is removed
    and ``note`` says why.
    """
    refs = [np.asarray(r, np.float32) for r in references]
    if len(refs) < MIN_FIELDS:
        return FixedPatternRemoval(refs, None, len(refs),
                                   f"kept: {len(refs)} fields, at least {MIN_FIELDS} are needed to tell the "
                                   "camera's pattern from the sample")
    if len({r.shape for r in refs}) != 1 or refs[0].ndim != 2:
        return FixedPatternRemoval(refs, None, len(refs), "kept: the references are not 2-D frames of one shape")
    pattern = estimate_fixed_pattern(refs)
    return FixedPatternRemoval([r - pattern for r in refs], pattern, len(refs),
                               f"removed: the median fine detail of {len(refs)} fields")
