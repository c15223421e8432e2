"""The fine-tune of ``bench_speed.bench_finetune`` for a checkout from before 2026-12-03, run by
``speed_of_checkout.py`` with that checkout's ``livedenoise`` on the path.

Issue 14 asks for "≥ 4× today's steps per second at equal quality", today being when the issue was filed. The code of
then (e.g. 75b3ad4, the commit before the channels-last layout) fine-tuned in one way only (fp32, every weight, NCHW),
and its ``bench_finetune(size, budget_s, device)`` reported no quality. This module runs the same fine-tune (the fast
backbone shipped with that checkout, the same simulated 256² frame, the same training settings) through that
checkout's API and scores it as today's ``bench_finetune`` does: PSNR of the backbone (noise model fitted to the
frame) and of the fine-tuned model against the simulator's truth without and with the camera's fixed pattern.
Only APIs that existed then are used.
"""
from __future__ import annotations

import time

import numpy as np


def bench(size: int, budget_s: float, device: str = "cpu") -> dict:
    """One self-supervised fine-tune of the fast backbone on one simulated ``size``² frame, the row of today's
    ``bench_finetune`` (fp32, every weight, NCHW: the only way then)."""
    from bench_speed import _model
    from skimage.metrics import peak_signal_noise_ratio

    from livedenoise.checkpoint import Checkpoint
    from livedenoise.config import TrainingConfig
    from livedenoise.evaluate import SimulatedTask, with_normalizer
    from livedenoise.inference import Denoiser
    from livedenoise.training.finetune import finetune

    source, label = _model("fast")
    if isinstance(source, tuple):
        source = Checkpoint(source[0], "unet", {}, source[1], name=label)
    task = SimulatedTask("filaments", size)
    frames = task.train_frames(20.0, seed=0, n=1)
    cfg = TrainingConfig(time_budget_s=budget_s, max_steps=100_000)
    t0 = time.perf_counter()
    res = finetune(source, frames, None, training=cfg, device=device, seed=0)
    wall = time.perf_counter() - t0
    f = res.fit
    rate = task.fields("train", 0, 1)[0]
    outputs = {name: Denoiser(model, device=device).denoise(frames[0]).astype(np.float32)
               for name, model in (("backbone", with_normalizer(source, frames)), ("fine-tuned", res.checkpoint))}
    psnr = {}
    for suffix, truth in (("", task.truth_flat(rate, 20.0)), (" with pattern", task.truth(rate, 20.0))):
        span = float(truth.max() - truth.min())
        psnr.update({name + suffix: float(peak_signal_noise_ratio(truth, out, data_range=span))
                     for name, out in outputs.items()})
    print(f"[speed] fine-tune {label} NCHW fp32 all {size}² on {device} (legacy): {wall:.1f} s, {f.steps} steps, "
          f"{f.stopped}, held-out loss {f.initial_val_loss:.5g} -> {f.best_val_loss:.5g}, "
          f"PSNR {psnr['backbone']:.2f} -> {psnr['fine-tuned']:.2f} dB", flush=True)
    return {"device": device, "model": label, "size": size, "wall_s": wall, "steps": f.steps, "stopped": f.stopped,
            "layout": "NCHW", "precision": "fp32", "adapt_layers": "all", "psnr": psnr, "adapted": res.adapted,
            "initial_val_loss": f.initial_val_loss, "best_val_loss": f.best_val_loss,
            "objective": f.objective, "validations": len(f.history), "best_step": f.best_step,
            "s_per_step": f.elapsed_s / max(f.steps, 1), "budget_s": budget_s, "batch_size": cfg.batch_size,
            "patch_size": cfg.patch_size, "patience": cfg.patience}
