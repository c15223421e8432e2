"""Supervised backbone pretraining (Wang et al.: MSE, lr 1e-3) on simulated pairs or a folder of real pairs.

``livedenoise pretrain`` wraps :func:`pretrain`. The shipped backbones in ``livedenoise/weights`` were
made with it (command, data recipe, duration and metrics are in the README).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from livedenoise.checkpoint import Checkpoint, save_checkpoint
from livedenoise.device import select_device
from livedenoise.models import PRESETS, build_model
from livedenoise.normalization import Normalizer
from livedenoise.training.data import ImageSet, PatchSampler
from livedenoise.training.finetune import match_intensity
from livedenoise.training.loop import FitProgress, FitResult, fit
from livedenoise.training.pairs import load_pair_folder
from livedenoise.training.simdata import BACKBONE_SCALE, simulated_pairs

log = logging.getLogger("livedenoise")


@dataclass
class PretrainResult:
    checkpoint: Checkpoint
    fit: FitResult
    data: dict


def _simulated_sets(n_train: int, n_val: int, size: int, seed: int) -> tuple[ImageSet, ImageSet, dict]:
    def build(n: int, s: int) -> ImageSet:
        noisy, clean = [], []
        for p in simulated_pairs(n, size, seed=s):
            noisy.append(p.normalizer.forward(p.noisy))
            clean.append(p.normalizer.forward(p.clean))
        return ImageSet(noisy, clean)

    desc = {"source": "simulator", "train_pairs": n_train, "val_pairs": n_val, "size": size,
            "photons": "log-uniform 2-1000 peak", "recipe": "livedenoise.training.simdata.simulated_pairs"}
    return build(n_train, seed), build(n_val, seed + 10_000), desc


def _folder_sets(folder: Path, val_fraction: float = 0.2) -> tuple[ImageSet, ImageSet, dict]:
    pairs = load_pair_folder(folder)
    noisy, clean = [], []
    for p in pairs:
        norm = Normalizer.fit([p.noisy]).copy(scale=BACKBONE_SCALE)
        noisy.append(norm.forward(p.noisy))
        clean.append(norm.forward(match_intensity(p.clean, p.noisy)))
    n_val = max(1, int(round(len(pairs) * val_fraction))) if len(pairs) > 1 else 0
    if n_val == 0:
        train = val = ImageSet(noisy, clean)
    else:
        train, val = ImageSet(noisy[:-n_val], clean[:-n_val]), ImageSet(noisy[-n_val:], clean[-n_val:])
    return train, val, {"source": str(folder), "pairs": len(pairs)}


def pretrain(
    preset: str = "fast",
    *,
    arch_kwargs: dict | None = None,
    pairs_dir: str | Path | None = None,
    n_train: int = 400,
    n_val: int = 32,
    image_size: int = 128,
    patch_size: int = 64,
    batch_size: int = 16,
    lr: float = 1e-3,
    max_steps: int = 20000,
    time_budget_s: float | None = None,
    patience: int = 20,
    steps_per_validation: int = 100,
    seed: int = 0,
    device: str = "auto",
    output: str | Path | None = None,
    progress: Callable[[FitProgress], None] | None = None,
    cancel: threading.Event | None = None,
    init: Checkpoint | None = None,
) -> PretrainResult:
    """Pretrain a backbone of a named preset ('fast', 'standard') supervised on noisy/clean pairs.

    ``init`` continues from an existing checkpoint's weights (same architecture): extend the shipped
    backbone on your own pairs, or train longer in several sessions.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    arch, kwargs = PRESETS[preset]
    kwargs = {**kwargs, **(arch_kwargs or {})}
    if init is not None:
        arch, kwargs = init.arch, dict(init.arch_kwargs)
    if pairs_dir is not None:
        train_set, val_set, desc = _folder_sets(Path(pairs_dir))
    else:
        train_set, val_set, desc = _simulated_sets(n_train, n_val, image_size, seed)
    model = init.clone().model if init is not None else build_model(arch, **kwargs)
    train = PatchSampler(train_set, patch_size, batch_size, seed=seed)
    val = PatchSampler(val_set, patch_size, batch_size, seed=seed + 1)
    result = fit(model, train, val, objective="supervised", lr=lr, max_steps=max_steps, time_budget_s=time_budget_s,
                 patience=patience, steps_per_validation=steps_per_validation, seed=seed,
                 device=select_device(device), progress=progress, cancel=cancel)
    model.to("cpu")
    normalizer = Normalizer(vst=True, scale=BACKBONE_SCALE)  # template: offset/gain/noise are set per experiment
    previous = init.training if init is not None else {}
    total_steps = int(previous.get("total_steps", previous.get("steps", 0))) + result.steps
    training = {"objective": "supervised pretraining", "lr": lr, "total_steps": total_steps,
                "continued_from": init.name if init is not None else None, "batch_size": batch_size, "patch_size": patch_size,
                "data": desc, **result.to_dict()}
    metrics = {"val_loss": result.best_val_loss, "initial_val_loss": result.initial_val_loss}
    name = f"backbone-{preset}"
    ckpt = Checkpoint(model=model, arch=arch, arch_kwargs=kwargs, normalizer=normalizer,
                      metadata={"training": training, "metrics": metrics}, path=None, name=name)
    if output is not None:
        ckpt.path = save_checkpoint(output, model, arch=arch, arch_kwargs=kwargs, normalizer=normalizer,
                                    training=training, metrics=metrics, name=name)
    return PretrainResult(ckpt, result, desc)
