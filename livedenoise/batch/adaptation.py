"""Adapting the model to the data before a batch job (--adapt self / pairs), once per channel."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.batch.models import ModelRef, resolve_model
from livedenoise.errors import ConfigError, InputDataError, LivedenoiseError
from livedenoise.io import (
    ImageDataset,
)

log = logging.getLogger("livedenoise")


def _sample_frames(datasets: Sequence[ImageDataset], count: int, channel: int | None, seed: int) -> list[np.ndarray]:
    """``count`` frames spread evenly over all inputs (one channel only when ``channel`` is given)."""
    rng = np.random.default_rng(seed)
    per = [max(1, count // len(datasets))] * len(datasets)
    frames = []
    for ds, n in zip(datasets, per, strict=True):
        lead = list(ds.shape[:-2])
        c_axis = ds.axes.index("C") if "C" in ds.axes[:-2] else None
        if channel is not None and c_axis is not None:
            if channel >= lead[c_axis]:
                continue
            lead[c_axis] = 1
        total = int(np.prod(lead, dtype=np.int64))
        picks = np.unique(np.linspace(0, total - 1, num=min(n, total)).round().astype(np.int64))
        if len(picks) < min(n, total):  # pragma: no cover - linspace rounding collisions
            picks = np.sort(rng.choice(total, size=min(n, total), replace=False))
        for flat in picks:
            index = [int(i) for i in np.unravel_index(int(flat), lead)] if lead else []
            if channel is not None and c_axis is not None:
                index[c_axis] = channel
            frames.append(np.asarray(ds.read_frame(index)))
    if not frames:
        raise InputDataError(
            f"No frames{' of channel ' + str(channel) if channel is not None else ''} to adapt the model on.")
    return frames


@dataclass
class _Adaptation:
    """What ``--adapt`` produced: the models to denoise with (one per channel), the adapted ones saved, the fits."""

    refs: list[ModelRef] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    fits: list[dict[str, Any]] = field(default_factory=list)


def _adapt_models(base: Any, datasets: Sequence[ImageDataset], mode: str, pairs_dir: str | None, per_channel: bool,
                  out_dir: Path, *, time_budget_s: float, n_frames: int, seed: int, device: str, resume: bool,
                  overwrite: bool, dry_run: bool, notes: list[str], warnings: list[str], status: Callable[[str], Any],
                  show_progress: bool = False) -> _Adaptation:
    """Fine-tune the base model (one per channel with ``per_channel``) and save it into ``out_dir``.

    Saved models are part of the output: with ``resume`` an existing one is reused (re-training
    would give another model and break the resume check), otherwise it must not exist yet.

    A fit that ran 0 steps or kept the base model's weights (no held-out improvement) is not an
    adapted model: nothing is saved, the base model (with the noise model fitted to the data, as
    without ``--adapt``) denoises that channel, and one warning line says so; saving it under the
    adapted model's name would present the unchanged backbone as a fine-tuned one.
    """
    from livedenoise.checkpoint import Checkpoint, load_checkpoint

    channels: list[int | None] = [None]
    if per_channel:
        sizes = {ds.size("C") for ds in datasets}
        if max(sizes) <= 1:
            raise InputDataError(
                "--per-channel needs inputs with a C (channel) axis; none of the inputs has several channels.")
        channels = list(range(max(sizes)))
    if mode == "pairs" and per_channel:
        raise ConfigError("--per-channel adapts one model per channel from the data itself; use it with --adapt self.")
    out = _Adaptation()
    refs = out.refs
    for ch in channels:
        suffix = f"-c{ch}" if ch is not None else ""
        path = out_dir / f"livedenoise-adapted-{mode}{suffix}.safetensors"
        if path.exists() and resume and not overwrite:
            notes.append(f"reusing adapted model {path}")
            refs.append(resolve_model(path, channel=ch))
            out.saved.append(str(path))
            continue
        if path.exists() and not overwrite and not dry_run:
            raise LivedenoiseError(f"{path} already exists; pass --resume to reuse it or --overwrite to adapt again.")
        if dry_run:
            notes.append(f"would fine-tune ({mode}) for up to {time_budget_s:.0f} s"
                         + (f" on channel {ch}" if ch is not None else "") + f" and save {path}")
            continue
        backbone = base if isinstance(base, Checkpoint) else None
        if backbone is None or backbone.path is not None:
            ref = resolve_model(base)
            if ref.path is None:
                raise ConfigError(
                    "--adapt needs a checkpoint (shipped name or .safetensors path) as the starting model.")
            from livedenoise.modelspec import model_file

            backbone = load_checkpoint(model_file(ref.path), device="cpu")
        from livedenoise.training.finetune import finetune

        if mode == "self":
            noisy = _sample_frames(datasets, n_frames, ch, seed)
            clean = None
            what = f"{len(noisy)} frames" + (f" of channel {ch}" if ch is not None else "")
        else:
            from livedenoise.training.pairs import load_pair_folder

            pairs = load_pair_folder(pairs_dir)  # type: ignore[arg-type]
            noisy, clean = [p.noisy for p in pairs], [p.clean for p in pairs]
            what = f"{len(pairs)} pairs from {pairs_dir}"
        text = f"fine-tuning {backbone.name} ({mode}) on {what}, up to {time_budget_s:.0f} s"
        status(text)
        with _fit_progress(show_progress, text) as callback:
            result = finetune(backbone, noisy, clean, time_budget_s=time_budget_s, seed=seed, device=device,
                              name=f"{backbone.name}+{mode}{suffix}", progress=callback)
        f = result.fit
        out.fits.append({"channel": ch, "steps": f.steps, "best_step": f.best_step, "stopped": f.stopped,
                         "adapted": result.adapted, "initial_val_loss": f.initial_val_loss,
                         "best_val_loss": f.best_val_loss})
        if not result.adapted:
            hint = "" if f.stopped == "skipped" else "; give a larger --adapt-time to adapt"
            msg = (f"--adapt {mode}{f' (channel {ch})' if ch is not None else ''}: not adapted "
                   f"({f.not_adapted_reason()}); denoised with the base model {backbone.name} instead, "
                   f"nothing saved{hint}")
            log.warning("%s", msg)
            warnings.append(msg)
            refs.append(resolve_model(base, channel=ch))
            continue
        ckpt: Checkpoint = result.checkpoint
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save(path)
        log.info("Adapted model saved to %s (%d steps, weights of step %d)", path, f.steps, f.best_step)
        refs.append(resolve_model(path, channel=ch))
        out.saved.append(str(path))
    return out


def _fit_progress(show: bool, text: str) -> Any:
    """The fine-tuning progress bar shared with `livedenoise finetune` (or no display)."""
    if not show:
        return contextlib.nullcontext(None)
    from livedenoise.progress import fit_progress

    return fit_progress(text)
