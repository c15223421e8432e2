"""The papers' central claims on the simulator, at test scale (CPU, small images, fixed step counts).

Data the shipped backbone never saw: puncta only, imaged through a wider PSF (sigma 2.2 px; pretraining
used 0.8-1.6 px) at a low peak signal (~15 photons). Margins are chosen to hold robustly: measured gains
are several times larger (see the README Results).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from livedenoise.checkpoint import Checkpoint, load_backbone
from livedenoise.config import TrainingConfig
from livedenoise.inference import Denoiser
from livedenoise.metrics import score
from livedenoise.models import PRESETS, build_model
from livedenoise.training.data import normalizer_for
from livedenoise.training.finetune import finetune
from simulators.config import load_microscope_config
from simulators.microscope import SimulatedMicroscope


@pytest.fixture(scope="module")
def experiment():
    cfg = load_microscope_config(
        roi_width=64, roi_height=64, light_power=5.0, exposure_ms=20.0,
        sample={"slide_width": 512, "slide_height": 512, "structures": ["puncta"], "density": 4.0, "psf_sigma": 2.2,
                "peak_rate": 15000.0, "background_rate": 40.0, "motion": 0.0, "seed": 11})
    scope = SimulatedMicroscope(cfg)

    def field(k):
        scope.set_position(x_um=k * 9.0, y_um=k * 5.0)
        f = scope.snap()
        ref = np.mean([scope.snap().image for _ in range(16)], axis=0)
        return f.image, ref, f.truth

    train = [field(k) for k in range(5)]  # 5 calibration pairs
    held_out = [field(k) for k in range(20, 24)]  # other fields of the same experiment
    return train, held_out


def psnr(den, frames):
    return float(np.mean([score(t, den.denoise(n) if den else n.astype(np.float32)).psnr for n, _, t in frames]))


def test_self_supervised_transfer_adapts_without_losing_to_the_backbone_and_beats_scratch(experiment):
    """Same data, same 30 steps: fine-tuning the backbone (the papers' lr 1e-4) vs the same network from scratch
    (given lr 1e-3, its best), both against the backbone alone on held-out fields. The backbone alone clears
    the raw and scratch margins, so the fine-tune must also have changed the weights and not lost to it."""
    train, held_out = experiment
    noisy = [n for n, _, _ in train]
    cfg = TrainingConfig(patch_size=32, batch_size=8, max_steps=30, steps_per_validation=10, patience=20)
    backbone = load_backbone("fast")
    torch.manual_seed(0)
    arch, kwargs = PRESETS["fast"]
    scratch = Checkpoint(build_model(arch, **kwargs), arch, dict(kwargs), backbone.normalizer.copy(), name="scratch")
    transfer = finetune(backbone, noisy, training=cfg, time_budget_s=900, device="cpu")
    from_scratch = finetune(scratch, noisy, training=cfg.model_copy(update={"lr_self_supervised": 1e-3}),
                            time_budget_s=900, device="cpu")
    assert transfer.adapted and transfer.fit.steps == 30 and transfer.fit.best_step > 0
    assert from_scratch.fit.steps == 30
    p_noisy = psnr(None, held_out)
    p_backbone = psnr(Denoiser(backbone, normalizer=normalizer_for(noisy, like=backbone.normalizer), device="cpu"),
                      held_out)
    p_transfer = psnr(Denoiser(transfer.checkpoint, device="cpu"), held_out)
    p_scratch = psnr(Denoiser(from_scratch.checkpoint, device="cpu"), held_out)
    assert p_transfer > p_noisy + 3.0, (p_noisy, p_transfer)
    assert p_transfer > p_scratch + 1.0, (p_scratch, p_transfer)
    # measured: raw 19.62 dB, scratch 19.35 (30 steps: an equal budget, far from converged), backbone 24.71,
    # fine-tuned 24.84 (+0.12); with lr 1e-3 the fine-tune fell to 24.38 (-0.33) although its held-out masked
    # loss improved by 5 %: the margin below catches that kind of loss
    assert p_transfer > p_backbone - 0.1, (p_backbone, p_transfer)


def test_five_pairs_improve_on_the_backbone_on_held_out_frames(experiment):
    train, held_out = experiment
    backbone = load_backbone("fast")
    cfg = TrainingConfig(patch_size=32, batch_size=8, max_steps=120, steps_per_validation=10, patience=20)
    res = finetune(backbone, [n for n, _, _ in train], [r for _, r, _ in train], training=cfg, time_budget_s=900,
                   device="cpu")
    assert res.mode == "pairs" and res.adapted and res.fit.steps > 0
    bb = Denoiser(backbone, normalizer=normalizer_for([n for n, _, _ in train], like=backbone.normalizer), device="cpu")
    p_bb = psnr(bb, held_out)
    p_adapted = psnr(Denoiser(res.checkpoint, device="cpu"), held_out)
    assert p_adapted > p_bb + 0.1, (p_bb, p_adapted)  # measured: +0.3 dB (24.53 -> 24.83) at 120 steps
