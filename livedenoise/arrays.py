"""Denoise an image already in memory the way ``livedenoise denoise`` denoises a file.

Why this exists: viewers (the napari plugin), notebooks and scripts hold images as arrays, and a bare
:class:`~livedenoise.inference.Denoiser` uses a model's *stored* normaliser, which is right only for the camera and
light level the model was trained on. :func:`denoise_array` does what the batch command does for every input: fit
the noise model to the data itself (sampled planes; the repeated frames of one field when it is a time-lapse), use
it, and check the result on one plane against that noise model, so a mismatch is a warning, not a silently wrong
image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError
from livedenoise.noise_model import NoiseFit

#: Planes the noise model is fitted on (evenly spaced through the stack), as the batch command samples a dataset.
FIT_PLANES = 8


@dataclass
class ArrayResult:
    """A denoised array (float32, the input's shape and units) and how it was made."""

    denoised: np.ndarray
    model: str
    noise_fit: NoiseFit
    residual_ok: bool
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a status bar or a log."""
        fit = self.noise_fit
        text = f"{self.model}, noise model: {fit.method} fit on {fit.frames} plane(s)"
        return text + (f"; {len(self.warnings)} warning(s): " + " ".join(self.warnings) if self.warnings else "")


def _planes(data: np.ndarray) -> np.ndarray:
    """The array as (N, Y, X) planes, refusing what is not a grey-level image stack."""
    if data.dtype == bool or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise InputDataError(f"the image has dtype {data.dtype}; expected integer or floating-point grey levels.")
    if data.ndim < 2 or min(data.shape[-2:]) < 8:
        raise InputDataError(f"the image has shape {data.shape}; expected (..., Y, X) with Y and X of 8 pixels or "
                             "more (an RGB image is not a fluorescence frame: split its channels first).")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise InputDataError("the image holds NaN or infinite values; denoising needs finite camera values.")
    return data.reshape(-1, *data.shape[-2:])


def denoise_array(data: Any, model: Any = "fast", *, time_lapse: bool = False, calibration: Any = None,
                  ensemble: int = 1, device: str = "auto") -> ArrayResult:
    """Denoise ``data`` (Y, X) or (..., Y, X) in camera units; returns an :class:`ArrayResult` whose
    ``denoised`` is float32 of the same shape.

    ``model``: a shipped backbone name, a checkpoint or a Model Zoo package (:func:`livedenoise.modelspec.model_path`)
    or a loaded :class:`~livedenoise.checkpoint.Checkpoint`. ``time_lapse``: the leading axis is time over one field;
    the noise is then measured from frame-to-frame differences, and a temporal model denoises each frame with its
    neighbours. ``calibration``: a camera calibration (object or file) for per-pixel offset and gain.
    """
    from livedenoise.checkpoint import Checkpoint
    from livedenoise.inference import Denoiser
    from livedenoise.modelspec import load_model_spec
    from livedenoise.noise_model import fit_noise_model
    from livedenoise.residual_check import check_residual

    arr = np.asarray(data)
    planes = _planes(arr)
    if time_lapse and arr.ndim != 3:
        raise InputDataError(f"time_lapse needs a (T, Y, X) stack; this image has shape {arr.shape}: give one channel "
                             "(and one z plane) at a time.")
    ckpt = model if isinstance(model, Checkpoint) else load_model_spec(model)
    from livedenoise.bioimageio_import import refuse_training

    refuse_training(ckpt, "denoise_array (it fits a noise model to the data; use Denoiser(...).denoise)")
    picks = np.unique(np.linspace(0, len(planes) - 1, num=min(FIT_PLANES, len(planes))).round().astype(int))
    sample = [np.asarray(planes[i]) for i in (range(min(len(planes), FIT_PLANES)) if time_lapse else picks)]
    fit = fit_noise_model(sample, like=ckpt.normalizer, calibration=calibration,
                          same_field=time_lapse and len(sample) > 1)
    denoiser = Denoiser(ckpt, normalizer=fit.normalizer, device=device, ensemble=ensemble)
    if time_lapse or arr.ndim == 2:
        out = denoiser.denoise_stack(arr)
    else:  # independent planes: a temporal model must not mix them, so each is denoised alone
        out = np.stack([denoiser.denoise(p) for p in planes]).reshape(arr.shape)
    middle = len(planes) // 2
    check = check_residual(planes[middle], out.reshape(planes.shape)[middle], fit.normalizer)
    warnings = [*fit.warnings, *([check.message] if not check.ok else [])]
    return ArrayResult(out.astype(np.float32, copy=False), ckpt.name, fit, check.ok, warnings)
