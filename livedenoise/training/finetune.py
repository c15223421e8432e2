"""Transfer fine-tuning of a pretrained backbone on one experiment's own data.

Two modes, one loop (:func:`livedenoise.training.loop.fit`):

* **self-supervised** (Wang et al.): blind-spot training on the experiment's noisy frames with cycled grid
  masks, lr 1e-4, patience 8; works from a single image. The default objective is Noise2Same (Xie et al.
  2020), which keeps Noise2Self's masks but adds a reconstruction term with the known noise level; plain
  Noise2Self is available (``TrainingConfig.self_supervised = "noise2self"``). Why: the backbone is a
  residual network pretrained on full images; Noise2Self only shapes its output on *masked* inputs, and the
  full-image prediction (what inference uses) then passes noise through — measured on simulated data it
  ended below the raw image. Noise2Same trains the full-image function directly and needs the noise
  standard deviation, which the variance-stabilising normaliser makes known (1/scale).
* **few pairs** (CNNT): supervised on a handful of low/high-SNR pairs, small learning rate.

The backbone is never modified: fine-tuning works on a deep copy and returns a new checkpoint whose
normaliser is fitted to the experiment's frames in the backbone's convention.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from livedenoise.checkpoint import Checkpoint
from livedenoise.config import TrainingConfig
from livedenoise.device import select_device
from livedenoise.errors import InputDataError
from livedenoise.training.data import ImageSet, PatchSampler, as_frames, normalizer_for, split_strips
from livedenoise.training.loop import FitProgress, FitResult, fit

log = logging.getLogger("livedenoise")

SELF_NAMES = {"noise2same": "Noise2Same", "noise2self": "Noise2Self"}


@dataclass
class FinetuneResult:
    """The adapted checkpoint and how the fit went."""

    checkpoint: Checkpoint
    fit: FitResult
    mode: str


def finetune(
    backbone: Checkpoint,
    noisy: Sequence[np.ndarray] | np.ndarray,
    clean: Sequence[np.ndarray] | np.ndarray | None = None,
    *,
    calibration=None,
    training: TrainingConfig | None = None,
    time_budget_s: float | None = None,
    seed: int | None = None,
    device: str = "auto",
    name: str | None = None,
    progress: Callable[[FitProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> FinetuneResult:
    """Adapt ``backbone`` to new data: Noise2Self when ``clean`` is None, few-pair supervised otherwise.

    ``noisy``/``clean`` are raw frames (camera units); ``calibration`` is an optional
    :class:`~livedenoise.calibration.CameraCalibration`. ``time_budget_s`` overrides the config's budget.
    """
    cfg = training or TrainingConfig()
    noisy_frames = as_frames(noisy, "noisy images")
    clean_frames = as_frames(clean, "clean images") if clean is not None else None
    if clean_frames is not None and len(clean_frames) != len(noisy_frames):
        raise InputDataError(f"{len(noisy_frames)} noisy images but {len(clean_frames)} clean images; pairs must match")
    if backbone.arch != "unet":
        raise InputDataError(f"fine-tuning supports 2-D U-Net backbones; '{backbone.name}' is a '{backbone.arch}' model")
    norm = normalizer_for(noisy_frames, like=backbone.normalizer, calibration=calibration,
                          saturation=backbone.normalizer.saturation)
    if clean_frames is not None:
        clean_frames = [match_intensity(c, n) for c, n in zip(clean_frames, noisy_frames)]
    data_noisy = [norm.forward(f) for f in noisy_frames]
    data_clean = [norm.forward(f) for f in clean_frames] if clean_frames is not None else None
    train_n, val_n = split_strips(data_noisy, cfg.validation_fraction)
    if data_clean is not None:
        train_c, val_c = split_strips(data_clean, cfg.validation_fraction)
    else:
        train_c = val_c = None
    seed = cfg.seed if seed is None else seed
    train = PatchSampler(ImageSet(train_n, train_c), cfg.patch_size, cfg.batch_size, seed=seed)
    val = PatchSampler(ImageSet(val_n, val_c), cfg.patch_size, cfg.batch_size, seed=seed + 1)
    if data_clean is not None:
        objective = "supervised"
    else:
        # Noise2Same needs the noise level, which the variance-stabilised normaliser fixes exactly (1/scale).
        objective = cfg.self_supervised if norm.vst else "noise2self"
    lr = cfg.lr_pairs if objective == "supervised" else cfg.lr_self_supervised
    adapted = backbone.clone()
    dev = select_device(device)
    result = fit(
        adapted.model, train, val, objective=objective, lr=lr, max_steps=cfg.max_steps,
        time_budget_s=time_budget_s if time_budget_s is not None else cfg.time_budget_s,
        patience=cfg.patience, steps_per_validation=cfg.steps_per_validation, loss=cfg.loss,
        ssim_weight=cfg.ssim_weight if objective == "supervised" else 0.0, mask_grid=cfg.mask_grid,
        noise_std=norm.noise_std if norm.vst else None, seed=seed, device=dev, progress=progress, cancel=cancel,
    )
    adapted.model.to("cpu")
    adapted.normalizer = norm
    adapted.name = name or f"{backbone.name}+{'pairs' if objective == 'supervised' else 'self'}"
    adapted.metadata = {
        **adapted.metadata,
        "training": {
            "mode": "pairs" if objective == "supervised" else f"self-supervised ({SELF_NAMES[objective]})",
            "backbone": backbone.name,
            "images": len(noisy_frames),
            "image_shapes": sorted({tuple(f.shape) for f in noisy_frames}),
            "lr": lr,
            "loss": cfg.loss,
            "config": cfg.model_dump(),
            **result.to_dict(),
        },
    }
    return FinetuneResult(adapted, result, "pairs" if objective == "supervised" else "self")


def match_intensity(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Map ``clean`` onto ``noisy``'s intensity scale with the least-squares affine fit ``a*clean + b``.

    A reference taken with a longer exposure or more light is brighter, and its offset/dark level may
    differ; the noisy frame's expected value is an affine function of it (same field, same camera), and
    zero-mean noise leaves the fit unbiased. The network then learns denoising, not a brightness change.
    """
    c = clean.astype(np.float64).ravel()
    n = noisy.astype(np.float64).ravel()
    if c.std() == 0:
        return np.full(clean.shape, n.mean(), np.float32)
    a, b = np.polyfit(c, n, 1)
    if not (np.isfinite(a) and a > 0):
        a, b = 1.0, 0.0
    return (clean.astype(np.float64) * a + b).astype(np.float32)
