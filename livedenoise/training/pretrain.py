"""Supervised backbone pretraining (Wang et al.: MSE, lr 1e-3) on synthetic pairs or a folder of real pairs.

Data sources (``data=``):

* ``"synthetic"`` (default): a bank of clean fields with many structure kinds
  (:mod:`simulators.structures`), rendered once and cached, with fresh camera noise drawn for every
  batch (:mod:`livedenoise.training.synthetic`). Compute-bound: every step is new data.
* ``"simulated"``: the first release's recipe, whole pairs from the simulated camera presets
  (:func:`livedenoise.training.simdata.simulated_pairs`), kept for comparison.
* ``pairs_dir``: a folder of real low/high-SNR pairs.

``livedenoise pretrain`` wraps :func:`pretrain`. Long runs are made of several calls: each saves the
current weights to ``output`` every ``checkpoint_every_s`` seconds (atomically, so a session that ends
mid-run loses minutes, not hours), and ``init=`` continues from that file, typically with a lower
learning rate (a step schedule). The shipped backbones' provenance (every stage's steps, learning
rate, data recipe and wall time) is in their metadata (``training.stages``) and the README.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from livedenoise.checkpoint import Checkpoint, save_checkpoint
from livedenoise.device import select_device
from livedenoise.errors import ConfigError
from livedenoise.models import PRESETS, TemporalUNet, UNet2D, build_model
from livedenoise.normalization import Normalizer
from livedenoise.training.data import ImageSet, PatchSampler
from livedenoise.training.finetune import match_intensity
from livedenoise.training.loop import FitProgress, FitResult, Schedule, fit
from livedenoise.training.pairs import load_pair_folder
from livedenoise.training.simdata import BACKBONE_SCALE, simulated_pairs, structure_bank
from livedenoise.training.synthetic import CleanBank, NoiseRecipe, SyntheticPairSampler
from livedenoise.training.timelapse import TimelapseSampler

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
    n_val = max(1, round(len(pairs) * val_fraction)) if len(pairs) > 1 else 0
    if n_val == 0:
        train = val = ImageSet(noisy, clean)
    else:
        train, val = ImageSet(noisy[:-n_val], clean[:-n_val]), ImageSet(noisy[-n_val:], clean[-n_val:])
    return train, val, {"source": str(folder), "pairs": len(pairs)}


def _synthetic_samplers(bank_fields: int, bank_size: int, held_out: tuple[str, ...], patch_size: int,
                        batch_size: int, seed: int, cache_dir: Path | None, window: int | None = None,
                        device: torch.device | str = "cpu"):
    """Training and validation samplers on the clean bank: still pairs, or time-lapse windows of ``window`` frames."""
    bank = structure_bank(bank_fields, bank_size, seed=seed, held_out=held_out, cache_dir=cache_dir)
    val_bank = structure_bank(max(16, bank_fields // 10), bank_size, seed=seed + 10_000, held_out=held_out,
                              cache_dir=cache_dir)
    recipe = NoiseRecipe()
    desc = {"source": "synthetic", **bank.description, "val_fields": len(val_bank), "noise": recipe.describe(),
            "recipe": "livedenoise.training.synthetic + simulators.structures"}
    if window is not None:
        train = TimelapseSampler(bank, patch_size, batch_size, window, recipe, seed=seed)
        val = TimelapseSampler(val_bank, patch_size, batch_size, window, recipe, seed=seed + 1)
        desc.update(recipe="livedenoise.training.timelapse + simulators.structures", window=window,
                    motion=train.motion.describe())
        return train, val, desc
    # Still pairs draw their noise on the training device (a GPU's step rate is not then set by the host);
    # the time-lapse windows (motion warps) are made on the host.
    return (SyntheticPairSampler(bank, patch_size, batch_size, recipe, seed=seed, device=device),
            SyntheticPairSampler(val_bank, patch_size, batch_size, recipe, seed=seed + 1, device=device), desc)


def _with_real_structure(train, val, desc: dict, images, names, weight: float, patch_size: int, batch_size: int,
                         seed: int, device: torch.device | str = "cpu"):
    """Mix batches from a bank of real structure fields into the synthetic samplers (see ``pretrain``)."""
    from livedenoise.training.realbank import MixedSampler, clean_bank_from_images

    bank = clean_bank_from_images(images, names=names, seed=seed)
    order = np.random.default_rng(seed).permutation(len(bank))
    n_val = max(1, len(bank) // 10)
    fit_bank = CleanBank(bank.fields[order[n_val:]], bank.description) if len(bank) > 1 else bank
    val_bank = CleanBank(bank.fields[order[:n_val]], bank.description)
    recipe = NoiseRecipe()
    real_train = SyntheticPairSampler(fit_bank, patch_size, batch_size, recipe, seed=seed + 2, device=device)
    real_val = SyntheticPairSampler(val_bank, patch_size, batch_size, recipe, seed=seed + 3, device=device)
    mixed_desc = {**desc, "real_structure": {**bank.description, "weight": weight, "validation_fields": n_val}}
    return (MixedSampler([train, real_train], [1.0 - weight, weight], seed=seed),
            MixedSampler([val, real_val], [1.0 - weight, weight], seed=seed + 1), mixed_desc)


def pretrain(
    preset: str | None = "fast",
    *,
    arch_kwargs: dict | None = None,
    pairs_dir: str | Path | None = None,
    data: str = "synthetic",
    bank_fields: int = 600,
    bank_size: int = 256,
    held_out: tuple[str, ...] = ("straight_filaments",),
    cache_dir: str | Path | None = None,
    checkpoint_every_s: float | None = 300.0,
    validation_batches: int = 8,
    n_train: int = 400,
    n_val: int = 32,
    image_size: int = 128,
    patch_size: int = 64,
    batch_size: int = 16,
    lr: float = 1e-3,
    schedule: Schedule = "constant",
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
    structure_images: Sequence[np.ndarray] | None = None,
    structure_names: Sequence[str] | None = None,
    structure_weight: float = 0.5,
    precision: str = "fp32",
) -> PretrainResult:
    """Pretrain a backbone of a named preset ('fast', 'standard', 'temporal') supervised on noisy/clean pairs.

    ``init`` continues from an existing checkpoint's weights: extend the shipped backbone on your own
    pairs, or train longer in several sessions. With ``preset=None`` the init's architecture is kept;
    a ``preset`` wider than the init (same depth) *grows* it first
    (:func:`livedenoise.models.widen.widen_unet`: the wide network starts as exactly the init's
    function, so ``fast`` -> ``standard`` keeps all the fast model learned). ``preset="temporal"`` with a
    2-D U-Net init builds the temporal backbone around a copy of it
    (:func:`livedenoise.models.temporal.temporal_from_frame_model`) and trains its fusion on synthetic
    time-lapse windows (:mod:`livedenoise.training.timelapse`) with the 2-D stage frozen, so the 2-D
    quality every frame starts from is exactly the init's.

    ``structure_images`` (high-SNR images, e.g. the clean halves of pairs; ``structure_names`` name them in
    the provenance) add real structure to the synthetic bank (:mod:`livedenoise.training.realbank`): a
    ``structure_weight`` share of the batches comes from fields cut from them, with the same fresh camera
    noise; one field in ten is kept for validation.

    ``schedule="cosine"`` decays ``lr`` over the run (``max_steps`` or ``time_budget_s``;
    :func:`livedenoise.training.loop.scheduled_lr`). On a CUDA ``device`` the synthetic noise is drawn on the
    GPU and cuDNN picks its fastest convolutions for the fixed patch size. ``precision="bf16"`` runs each step's
    network under bf16 autocast (weights, optimiser, loss and validations stay fp32; :func:`fit`); the stage
    records what ran.
    """
    if init is None and preset is None:
        preset = "fast"
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    grown_from = None
    temporal_target = preset is not None and PRESETS[preset][0] == "unet-temporal"
    if temporal_target and (init is None or init.arch not in ("unet", "unet-temporal")):
        raise ValueError("the temporal backbone is built on a 2-D backbone: give --init fast (or another 2-D U-Net)")
    if init is not None and temporal_target and init.arch == "unet":
        from livedenoise.models.temporal import temporal_from_frame_model

        assert preset is not None  # a temporal target is a preset
        fusion_window = int({**PRESETS[preset][1], **(arch_kwargs or {})}["window"])
        grown_from = (f"{init.name} (2-D, widths {list(init.arch_kwargs.get('widths', []))}) "
                      f"with a {fusion_window}-frame fusion")
        init = init.clone()
        extra = {k: v for k, v in (arch_kwargs or {}).items() if k in ("sigma", "align")}
        init.model = temporal_from_frame_model(cast(UNet2D, init.model), fusion_window, **extra)
        init.arch, init.arch_kwargs = "unet-temporal", dict(init.model.arch_kwargs)
        arch, kwargs = init.arch, dict(init.arch_kwargs)
    elif init is not None:
        arch, kwargs = init.arch, dict(init.arch_kwargs)
        if preset is not None and list(PRESETS[preset][1].get("widths", ())) != list(kwargs.get("widths", ())):
            from livedenoise.models.widen import widen_unet

            if init.arch != "unet" or PRESETS[preset][0] != "unet":
                raise ValueError(f"--preset {preset} differs from the init's architecture '{init.arch}'; "
                                 "only U-Nets grow")
            grown_from = f"{init.name} (widths {list(kwargs['widths'])})"
            init = init.clone()
            init.model = widen_unet(cast(UNet2D, init.model), PRESETS[preset][1]["widths"], seed=seed)
            init.arch_kwargs = dict(init.model.arch_kwargs)
            arch, kwargs = init.arch, dict(init.arch_kwargs)
    else:
        assert preset is not None  # without an init, preset defaults to "fast" above
        arch, kwargs = PRESETS[preset]
        kwargs = {**kwargs, **(arch_kwargs or {})}
    window = int(kwargs["window"]) if arch == "unet-temporal" else None
    if window is not None and (pairs_dir is not None or data != "synthetic"):
        raise ValueError("the temporal backbone trains on synthetic time-lapse windows only "
                         "(data='synthetic', no pairs folder)")
    if data not in ("synthetic", "simulated"):
        raise ValueError(f"unknown pretraining data {data!r}; expected 'synthetic' or 'simulated' (or a pairs folder)")
    if structure_images is not None:  # checked before any bank is rendered or loaded
        if window is not None or pairs_dir is not None or data != "synthetic":
            raise ConfigError("real structure images (--structures) join the synthetic bank of a 2-D backbone: "
                              "not with --pairs, --data simulated or the temporal preset")
        if not 0.0 < structure_weight <= 1.0:
            raise ConfigError(f"structure_weight {structure_weight!r} is invalid; expected a share in (0, 1]")
    dev = select_device(device)
    if pairs_dir is not None:
        train_set, val_set, desc = _folder_sets(Path(pairs_dir))
        train = PatchSampler(train_set, patch_size, batch_size, seed=seed)
        val = PatchSampler(val_set, patch_size, batch_size, seed=seed + 1)
    elif data == "simulated":
        train_set, val_set, desc = _simulated_sets(n_train, n_val, image_size, seed)
        train = PatchSampler(train_set, patch_size, batch_size, seed=seed)
        val = PatchSampler(val_set, patch_size, batch_size, seed=seed + 1)
    else:
        train, val, desc = _synthetic_samplers(bank_fields, bank_size, tuple(held_out), patch_size, batch_size, seed,
                                               Path(cache_dir) if cache_dir is not None else None, window, dev)
    if structure_images is not None:
        train, val, desc = _with_real_structure(train, val, desc, structure_images, structure_names, structure_weight,
                                                patch_size, batch_size, seed, dev)
    model = init.clone().model if init is not None else build_model(arch, **kwargs)
    if window is not None:
        # only the fusion learns: the 2-D stage stays the init's, as does the second pass's where it keeps its own
        stages_2d = [m for m in (model.frame, getattr(model, "averages", None)) if m is not None]
        for p in (p for m in stages_2d for p in cast(nn.Module, m).parameters()):
            p.requires_grad_(False)
    normalizer = Normalizer(vst=True, scale=BACKBONE_SCALE)  # template: offset/gain/noise are set per experiment
    previous = init.training if init is not None else {}
    stages = list(previous.get("stages", []))
    prior_steps = int(previous.get("total_steps", previous.get("steps", 0)))
    if init is not None and not stages and prior_steps:
        stages = [{"steps": prior_steps, "note": "earlier training (before stages were recorded)",
                   "data": previous.get("data"), "lr": previous.get("lr")}]
    if grown_from is not None and window is not None:
        stages.append({"steps": 0, "note": f"built on {grown_from}: the 2-D stage is a copy of it "
                       "(livedenoise.models.temporal)"})
    elif grown_from is not None:
        stages.append({"steps": 0, "note": f"grown from {grown_from} to widths {list(kwargs['widths'])}, "
                       "function preserved (livedenoise.models.widen)"})
    name = f"backbone-{preset}" if (init is None or grown_from is not None) else init.name
    stage = {"lr": lr, "schedule": schedule, "batch_size": batch_size, "patch_size": patch_size, "data": desc,
             "seed": seed, "max_steps": max_steps, "time_budget_s": time_budget_s, "patience": patience,
             "steps_per_validation": steps_per_validation, "device": str(dev), "precision": precision}
    if window is not None:
        stage["trained"] = "the temporal fusion only (2-D stage frozen)"

    def training_record(result_dict: dict, steps: int) -> dict:
        return {**result_dict, "objective": "supervised pretraining", "lr": lr, "total_steps": prior_steps + steps,
                "continued_from": init.name if init is not None else None, "batch_size": batch_size,
                "patch_size": patch_size, "data": desc, "stages": [*stages, {**stage, **result_dict}]}

    def save(training: dict, metrics: dict) -> Path:
        assert output is not None  # only called with an output
        return save_checkpoint(output, model, arch=arch, arch_kwargs=kwargs, normalizer=normalizer,
                               training=training, metrics=metrics, name=name)

    last_save = [time.perf_counter()]

    def on_progress(p: FitProgress) -> None:
        # Periodic checkpoint of the current weights, so a run cut off by the end of a session resumes with init=.
        if output is not None and checkpoint_every_s and time.perf_counter() - last_save[0] >= checkpoint_every_s:
            interim = {"steps": p.step, "elapsed_s": p.elapsed_s, "stopped": "running (interim checkpoint)",
                       "val_loss": p.val_loss}
            save(training_record(interim, p.step), {"val_loss": p.val_loss})
            last_save[0] = time.perf_counter()
            log.info("interim checkpoint at step %d (val %.4g): %s", p.step, p.val_loss, output)
        if progress is not None:
            progress(p)

    benchmark = torch.backends.cudnn.benchmark
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN time its algorithms once
    try:
        result = fit(model, train, val, objective="supervised", lr=lr, max_steps=max_steps,
                     time_budget_s=time_budget_s, patience=patience, steps_per_validation=steps_per_validation,
                     validation_batches=validation_batches, seed=seed, device=dev, progress=on_progress,
                     cancel=cancel, schedule=schedule, precision=precision)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    model.to("cpu")
    training = training_record(result.to_dict(), result.steps)
    metrics: dict[str, Any] = {"val_loss": result.best_val_loss, "initial_val_loss": result.initial_val_loss}
    if window is not None:
        metrics["fusion"] = cast(TemporalUNet, model).fusion.describe()
    ckpt = Checkpoint(model=model, arch=arch, arch_kwargs=kwargs, normalizer=normalizer,
                      metadata={"training": training, "metrics": metrics}, path=None, name=name)
    if output is not None:
        ckpt.path = save(training, metrics)
    return PretrainResult(ckpt, result, desc)
