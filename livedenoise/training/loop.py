"""One fit loop for every objective: supervised pairs, Noise2Self, few-pair fine-tuning, pretraining.

It validates every ``steps_per_validation`` steps on fixed held-out batches, keeps the best weights,
stops early after ``patience`` validations without improvement (patience 8, Wang et al.), stops at a
time budget ("fine-tune for at most N seconds"), and can be cancelled from another thread (the live
session runs it in the background). On return the model holds the best weights seen.

When the time budget, a cancel or ``max_steps`` ends the loop between two validations, the current
weights are validated once more: weights are only ever kept at a validation, so without it a short
budget (a slow CPU, a large model) that ran steps but never reached the first scheduled validation
would silently return the initial weights. :attr:`FitResult.adapted` says whether the returned
weights are the initial ones, so no caller can present an unchanged model as an adapted one.
"""
from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch

from livedenoise.config import TrainPrecision
from livedenoise.cpu_memory import keep_freed_memory
from livedenoise.errors import ConfigError
from livedenoise.training.data import PatchSampler
from livedenoise.training.losses import supervised_loss
from livedenoise.training.masking import mean_noise2same_loss, noise2same_loss, noise2self_loss
from livedenoise.training.sure import sure_loss

log = logging.getLogger("livedenoise")

Objective = Literal["supervised", "noise2self", "noise2same", "sure"]
StopReason = Literal["early_stop", "time_budget", "max_steps", "cancelled", "skipped"]


@dataclass
class FitProgress:
    """What a progress callback receives after each validation."""

    step: int
    max_steps: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    elapsed_s: float
    time_budget_s: float | None
    improved: bool

    @property
    def fraction(self) -> float:
        """Progress in [0, 1]: the larger of steps done and time spent."""
        by_steps = self.step / max(self.max_steps, 1)
        by_time = self.elapsed_s / self.time_budget_s if self.time_budget_s else 0.0
        return float(min(1.0, max(by_steps, by_time)))


@dataclass
class FitResult:
    """Summary of a fit: losses, steps, why it stopped, and the validation history."""

    objective: Objective
    initial_val_loss: float
    best_val_loss: float
    best_step: int
    steps: int
    stopped: StopReason
    elapsed_s: float
    history: list[dict] = field(default_factory=list)
    note: str = ""  # why a fit was skipped (stopped == "skipped") or its weights rejected, in one sentence
    rejected: bool = False  # a later check (finetune's SURE criterion) sent the weights back to the initial ones
    precision: str = "fp32"  # the training steps' arithmetic (fit's ``precision``)
    paused_s: float = 0.0  # of elapsed_s, the seconds fit's ``pause`` hook waited (for a live display)

    @property
    def adapted(self) -> bool:
        """True when the returned weights differ from the initial ones (a later validation beat the initial one).

        A fit that ran 0 steps, or whose best validation is the initial one, returns the model it was given:
        callers must not save, swap in or report such a model as adapted.
        """
        return self.steps > 0 and self.best_step > 0 and not self.rejected

    def not_adapted_reason(self) -> str:
        """Why the returned weights are the initial ones, in a few words (for one-line messages)."""
        if self.stopped == "skipped" or self.rejected:
            return self.note
        if self.steps == 0:
            return f"no training step ran in {self.elapsed_s:.0f} s"
        return f"{self.steps} steps found no improvement on held-out data in {self.elapsed_s:.0f} s"

    def to_dict(self) -> dict:
        """JSON-safe summary (no history): losses, ``steps``, ``best_step``, ``stopped``, ``adapted``, validations."""
        return ({k: v for k, v in self.__dict__.items() if k != "history"}
                | {"adapted": self.adapted, "validations": len(self.history)})


Schedule = Literal["constant", "cosine"]

#: The cosine schedule ends at this fraction of the initial learning rate.
COSINE_FLOOR = 0.03


def scheduled_lr(lr: float, step: int, max_steps: int, elapsed_s: float, time_budget_s: float | None) -> float:
    """The cosine schedule's rate at ``step``: progress is the larger of steps done and time spent, so a run cut
    by its time budget still ends near ``COSINE_FLOOR * lr`` instead of mid-schedule."""
    done = step / max(max_steps, 1)
    if time_budget_s:
        done = max(done, elapsed_s / time_budget_s)
    done = min(1.0, done)
    return lr * (COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * done)))


def _batch_loss(model, objective: Objective, x, y, step: int, loss: str, ssim_weight: float, grid: int,
                noise_std: float | None = None, probe: torch.Tensor | None = None) -> torch.Tensor:
    if objective == "sure":
        assert noise_std is not None  # fit() refuses sure without it
        return sure_loss(model, x, float(noise_std), probe)
    if objective == "noise2self":
        return noise2self_loss(model, x, phase=step, grid=grid, loss=loss)
    if objective == "noise2same":
        assert noise_std is not None  # fit() refuses noise2same without it
        return noise2same_loss(model, x, phase=step, grid=grid, noise_std=float(noise_std))
    return supervised_loss(model(x), y, loss, ssim_weight)


#: Train plain 2-D U-Nets in the channels-last layout (``benchmarks/bench_speed.py`` measures both settings).
TRAIN_CHANNELS_LAST = True


def _trains_channels_last(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a plain 2-D U-Net (4-D NCHW inputs), the kind the channels-last layout speeds up."""
    from livedenoise.models.unet import UNet2D

    inner = getattr(model, "inner_model", model)  # a wrapper around the network (training.gat_target)
    return TRAIN_CHANNELS_LAST and type(inner) is UNet2D


def _layout(x: torch.Tensor, nhwc: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if nhwc and x.dim() == 4 else x


#: Arithmetic a training step can run in (``TrainingConfig.precision``).
TRAIN_PRECISIONS: tuple[str, ...] = get_args(TrainPrecision)


class _Bf16Forward(torch.nn.Module):
    """``model``'s forward pass under bf16 autocast, its output handed back in fp32: every loss is then computed
    in fp32 (a bf16 SSIM window or a bf16 ``full - blind`` difference loses most of its precision), while the
    convolutions, where the time goes, run in bf16. The weights stay ``model``'s fp32 ones."""

    def __init__(self, model: torch.nn.Module, device_type: str) -> None:
        super().__init__()
        self.model, self.device_type = model, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()


def _stepping_model(model: torch.nn.Module, precision: str, objective: Objective,
                    device: torch.device) -> tuple[torch.nn.Module, str]:
    """The module the training steps call, and the precision they actually run in."""
    if precision not in TRAIN_PRECISIONS:
        raise ConfigError(f"training precision {precision!r} is unknown; "
                          f"expected one of {', '.join(TRAIN_PRECISIONS)}.")
    if precision == "fp32":
        return model, "fp32"
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"bf16 training runs on a CPU or a CUDA GPU, not on {device.type}; use precision 'fp32'.")
    if objective == "sure":
        # SURE's divergence probe perturbs the input by 1 % of the noise level, below bf16's resolution of the input:
        # most perturbations would vanish at the first convolution and the rest be rounded to a full bf16 step
        log.info("SURE fine-tuning runs in fp32: its divergence probe is finer than bf16 resolves")
        return model, "fp32"
    return _Bf16Forward(model, device.type), "bf16"


def _validate(model, objective: Objective, batches, device, loss: str, grid: int, noise_std: float | None) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i, (x, y) in enumerate(batches):
            x = x.to(device)
            y = y.to(device) if y is not None else None
            if objective == "sure":
                # A fixed divergence probe per batch, so that validations of different weights compare.
                gen = torch.Generator().manual_seed(1000 + i)
                probe = torch.randn(x.shape, generator=gen).to(device)
                total += float(_batch_loss(model, objective, x, None, 0, loss, 0.0, grid, noise_std, probe))
            elif objective in ("noise2self", "noise2same"):
                # Several grid phases so the estimate covers different pixels, the same ones every time.
                phases = range(i, grid * grid, max(1, grid * grid // 2))
                if objective == "noise2same":  # the unmasked prediction is shared by the phases: computed once
                    assert noise_std is not None  # fit() refuses noise2same without it
                    total += float(mean_noise2same_loss(model, x, list(phases), grid, float(noise_std)))
                    continue
                total += float(np.mean([float(_batch_loss(model, objective, x, y, p, loss, 0.0, grid, noise_std))
                                        for p in phases]))
            else:
                total += float(_batch_loss(model, objective, x, y, 0, loss, 0.0, grid))
    model.train()
    return total / max(len(batches), 1)


def fit(
    model: torch.nn.Module,
    train: PatchSampler,
    val: PatchSampler,
    *,
    objective: Objective,
    lr: float,
    max_steps: int = 2000,
    time_budget_s: float | None = None,
    patience: int = 8,
    steps_per_validation: int = 10,
    validation_batches: int = 2,
    loss: str = "l2",
    ssim_weight: float = 0.0,
    mask_grid: int = 4,
    noise_std: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[FitProgress], None] | None = None,
    cancel: threading.Event | None = None,
    validate_at_end: bool = True,
    trainable: Sequence[torch.nn.Parameter] | None = None,
    schedule: Schedule = "constant",
    precision: str = "fp32",
    pause: Callable[[], float] | None = None,
) -> FitResult:
    """Train ``model`` in place and leave it holding the best validation weights.

    ``validate_at_end``: validate the final weights when the loop ends between scheduled validations
    (time budget, cancel), so steps run after the last validation can still be kept; this may exceed
    ``time_budget_s`` by one validation (a few forward passes). ``False`` restores the old behaviour.
    ``trainable``: the parameters to optimise (default all; see :mod:`livedenoise.training.partial`).
    ``schedule``: ``"constant"`` keeps ``lr``; ``"cosine"`` decays it to ``COSINE_FLOOR`` times ``lr`` over the run,
    whose length is ``max_steps`` or ``time_budget_s``, whichever ends it first (:func:`scheduled_lr`): one run
    of a fixed budget ends at a low rate, where the step-wise stages of several runs needed several calls.
    ``precision``: ``"bf16"`` runs the training steps' forward passes under bf16 autocast (the weights, the
    optimiser, the losses and every validation stay in fp32, so which weights are kept is decided as in fp32; SURE
    stays fp32, see :func:`_stepping_model`); ``"fp32"`` (default) does not. The result records what ran.
    ``pause``: called once before every training step; it may block while other work needs the CPU more (a live
    session's display) and returns the seconds it waited. The waits count against ``time_budget_s`` (a budget is
    wall-clock time; the wait before the budget's end may end past it) and are recorded as ``FitResult.paused_s``.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected 'constant' or 'cosine'")
    if objective == "supervised" and not train.data.supervised:
        raise ValueError("supervised training needs clean targets")
    if objective in ("noise2same", "sure") and not noise_std:
        raise ValueError(f"{objective} needs the noise standard deviation in network units (noise_std)")
    torch.manual_seed(seed)
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()  # every step's activations reuse freed memory (livedenoise.cpu_memory)
    model.to(device).train()
    stepping, precision = _stepping_model(model, precision, objective, device)
    # 2-D U-Nets train in the channels-last layout, where oneDNN's convolutions are fastest (1.17x per step for
    # the fast model at 8x96², 1 thread); the model is handed back in the standard layout.
    nhwc = _trains_channels_last(model)
    if nhwc:
        # memory_format= is valid at runtime but missing from torch's stubs of Module.to
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # fused: one kernel for all parameters instead of ~20 small operations per tensor (a fine-tune step of the fast
    # backbone spent 1 ms of its 27 in the per-tensor update on the CPU)
    opt = torch.optim.Adam(list(trainable) if trainable is not None else model.parameters(), lr=lr,
                           fused=device.type in ("cpu", "cuda"))
    val_batches = val.fixed_batches(validation_batches)
    start = time.perf_counter()
    best = _validate(model, objective, val_batches, device, loss, mask_grid, noise_std)
    initial, best_step = best, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict] = [{"step": 0, "train_loss": math.nan, "val_loss": best, "elapsed_s": 0.0}]
    bad, step = 0, 0
    paused = 0.0
    running: list[float] = []
    stopped: StopReason = "max_steps"

    def validate(at_end: bool) -> tuple[float, bool]:
        """Validate the current weights at ``step``; keep them when they beat the best so far."""
        nonlocal best, best_step, best_state, bad, running
        v = _validate(model, objective, val_batches, device, loss, mask_grid, noise_std)
        improved = v < best - 1e-4 * abs(best)  # relative, and right for losses that can be negative (SURE)
        if improved:
            best, best_step, bad = v, step, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        elapsed = time.perf_counter() - start
        entry = {"step": step, "train_loss": float(np.mean(running)) if running else math.nan, "val_loss": v,
                 "elapsed_s": elapsed}
        if at_end:
            entry["final"] = True
        history.append(entry)
        running = []
        if progress is not None:
            progress(FitProgress(step, max_steps, entry["train_loss"], v, best, elapsed, time_budget_s, improved))
        return v, improved

    def ended() -> StopReason | None:
        if cancel is not None and cancel.is_set():
            return "cancelled"
        if time_budget_s is not None and time.perf_counter() - start >= time_budget_s:
            return "time_budget"
        return None

    while step < max_steps:
        reason = ended()
        if reason is None and pause is not None:
            paused += pause()  # one wait at most per step: every wait is followed by a step, or by the end
            reason = ended()
        if reason is not None:
            stopped = reason
            break
        if schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = scheduled_lr(lr, step, max_steps, time.perf_counter() - start, time_budget_s)
        x, y = train.sample()
        x = _layout(x.to(device), nhwc)
        y = _layout(y.to(device), nhwc) if y is not None else None
        opt.zero_grad(set_to_none=True)
        batch_loss = _batch_loss(stepping, objective, x, y, step, loss, ssim_weight, mask_grid, noise_std)
        batch_loss.backward()
        opt.step()
        running.append(float(batch_loss.detach()))
        step += 1
        if step % steps_per_validation == 0 or step == max_steps:
            validate(at_end=False)
            if bad >= patience:
                stopped = "early_stop"
                break
    if validate_at_end and step > history[-1]["step"]:
        # Ended between validations (time budget, cancel): the steps since the last validation still count.
        validate(at_end=True)
    if step == 0:
        log.warning("no training step fitted in the time budget of %.0f s (the first validation took %.1f s); "
                    "the model is unchanged: give a larger time budget", time_budget_s or 0,
                    time.perf_counter() - start)
    model.load_state_dict(best_state)
    if nhwc:  # memory_format= is valid at runtime but missing from torch's stubs of Module.to
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model.eval()
    result = FitResult(objective, initial, best, best_step, step, stopped, time.perf_counter() - start, history,
                       precision=precision, paused_s=paused)
    log.info("fit (%s, %s): %d steps in %.1f s%s, val loss %.4g -> %.4g (best at step %d), stopped: %s%s",
             objective, precision, step, result.elapsed_s,
             f" ({paused:.1f} s of it paused)" if paused > 0 else "", initial, best, best_step, stopped,
             "" if result.adapted else "; the initial weights were kept (not adapted)")
    return result
