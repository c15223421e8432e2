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
callers whose fields are meant to differ (a live session's or an attached acquisition's calibration) use it,
and it checks the data before it removes anything (:func:`_why_not`: fields that look alike, or a sample whose
fine texture outweighs the pattern, leave the references as they are); pairs a user hands to ``finetune``
are left as they are. A camera calibration with per-pixel maps already maps every pixel back to its own
offset and gain, so the callers skip the removal then.
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


#: Fields whose smooth images correlate more than this are taken for the same field (the stage did not move,
#: or the fields overlap almost entirely): their median detail would be the sample's own.
SAME_FIELD_CORRELATION = 0.9


#: Scale (px) above which image content counts as shading (uneven illumination, the same in every field), left
#: out when fields are compared.
SHADING_SIGMA = 8.0


def _detail(references: Sequence[np.ndarray], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(fine detail, structure) of each reference, [N, H, W] float64: the detail below ``sigma`` (noise, the
    pattern, sharp edges) and the band between ``sigma`` and :data:`SHADING_SIGMA` (the sample's structures,
    without the pixel pattern or the illumination's shading, which are the same in every field)."""
    from scipy.ndimage import gaussian_filter

    refs = np.stack([np.asarray(r, np.float64) for r in references])
    smooth = np.stack([gaussian_filter(r, sigma, mode="reflect") for r in refs])
    shading = np.stack([gaussian_filter(r, SHADING_SIGMA, mode="reflect") for r in refs])
    return refs - smooth, smooth - shading


def estimate_fixed_pattern(references: Sequence[np.ndarray], sigma: float = DETAIL_SIGMA) -> np.ndarray:
    """The pattern common to ``references`` of different fields (ADU, zero mean): the per-pixel median of
    their fine detail."""
    detail, _ = _detail(references, sigma)
    pattern = np.median(detail, axis=0)
    return (pattern - pattern.mean()).astype(np.float32)


def _why_not(detail: np.ndarray, structure: np.ndarray) -> str | None:
    """Why the median detail of these fields is not the camera's pattern, or None when it is usable.

    * **The same field twice** (the stage did not move, or the fields overlap almost entirely): the structure
      of two fields (:func:`_detail`) correlates above :data:`SAME_FIELD_CORRELATION`.
    * **Structure, not pattern**: leave one field out, estimate the pattern from the others and subtract it
      from that field's detail. Where the pattern dominates the detail this shrinks it; where the sample's own
      fine texture dominates (a dense sample), the others' median is mostly their texture and subtracting it
      *adds* detail. The estimate is used only when it shrinks every field's detail.
    """
    from scipy.ndimage import gaussian_filter

    n = len(detail)
    # the pattern's own share of the structure band is the same in every field: not a sign of one field. It is the
    # band of the pattern estimate (fine detail), so a field imaged twice keeps its structure and is still caught.
    # Row and column offsets (a common sCMOS pattern) sit at every scale along one axis: their means are dropped.
    pattern = np.median(detail, axis=0)
    structure = structure - (gaussian_filter(pattern, DETAIL_SIGMA, mode="reflect")
                             - gaussian_filter(pattern, SHADING_SIGMA, mode="reflect"))
    structure = structure - structure.mean(axis=1, keepdims=True)
    structure = structure - structure.mean(axis=2, keepdims=True)
    flat = (structure - structure.mean(axis=(1, 2), keepdims=True)).reshape(n, -1)
    norms = np.linalg.norm(flat, axis=1)
    for i in range(n):
        for j in range(i + 1, n):
            if norms[i] > 0 and norms[j] > 0:
                corr = float(flat[i] @ flat[j] / (norms[i] * norms[j]))
                if corr > SAME_FIELD_CORRELATION:
                    return (f"fields {i + 1} and {j + 1} look like the same field (correlation {corr:.2f}); the "
                            "calibration positions must image different, non-overlapping fields")
    for k in range(n):
        others = np.median(np.delete(detail, k, axis=0), axis=0)
        others -= others.mean()
        if np.var(detail[k] - others) >= np.var(detail[k]):
            return (f"subtracting the other fields' median detail from field {k + 1} adds detail instead of removing "
                    "a pattern: the sample's own fine texture, or the references' remaining noise (too few frames "
                    "averaged), is stronger than the camera's pattern")
    return None


def remove_fixed_pattern(references: Sequence[np.ndarray], *, also: Sequence[np.ndarray] = (),
                         saturation: float | None = None) -> FixedPatternRemoval:
    """``references`` (2-D frames of different fields, same shape) minus their common fixed pattern.

    ``also``: more frames of the same camera to subtract the estimate from, without taking part in it (a
    held-out field's target, whose frames must not shape the pattern removed from it); returned after
    ``references`` in :attr:`FixedPatternRemoval.references`. Nothing is removed, and ``note`` says why, with
    fewer than :data:`MIN_FIELDS` references, references of different shapes, fields that look alike, or a
    sample whose fine texture outweighs the pattern (:func:`_why_not`). ``saturation``: pixels at or above it in
    any reference (clipped: their value says nothing about the pattern) get no pattern subtracted anywhere, so
    they stay at the level that marks them saturated.
    """
    refs = [np.asarray(r, np.float32) for r in references]
    extra = [np.asarray(r, np.float32) for r in also]
    if len(refs) < MIN_FIELDS:
        return FixedPatternRemoval(refs + extra, None, len(refs),
                                   f"kept: {len(refs)} fields, at least {MIN_FIELDS} are needed to tell the "
                                   "camera's pattern from the sample")
    if len({r.shape for r in refs + extra}) != 1 or refs[0].ndim != 2:
        return FixedPatternRemoval(refs + extra, None, len(refs),
                                   "kept: the references are not 2-D frames of one shape")
    detail, structure = _detail(refs, DETAIL_SIGMA)
    why = _why_not(detail, structure)
    if why is not None:
        return FixedPatternRemoval(refs + extra, None, len(refs), f"kept: {why}")
    pattern = np.median(detail, axis=0)
    pattern = (pattern - pattern.mean()).astype(np.float32)
    if saturation is not None:
        clipped = np.any(np.stack(refs + extra) >= saturation, axis=0)
        pattern[clipped] = 0.0
    return FixedPatternRemoval([r - pattern for r in refs + extra], pattern, len(refs),
                               f"removed: the median fine detail of {len(refs)} fields")
