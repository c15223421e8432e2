"""Training: Noise2Self masking is blind, the fit loop stops/cancels/reproduces, fine-tuning improves on ground truth."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
import torch

from livedenoise.checkpoint import Checkpoint, load_checkpoint
from livedenoise.cli import main
from livedenoise.config import TrainingConfig
from livedenoise.errors import InputDataError
from livedenoise.metrics import score
from livedenoise.models import build_model
from livedenoise.normalization import Normalizer
from livedenoise.training.data import ImageSet, PatchSampler, split_strips
from livedenoise.training.finetune import finetune, match_intensity
from livedenoise.training.loop import fit
from livedenoise.training.masking import grid_mask, masked_input, noise2self_loss
from livedenoise.training.pairs import load_pair_folder
from livedenoise.training.simdata import BACKBONE_SCALE, simulated_pairs
from livedenoise.inference import Denoiser


def tiny_checkpoint(widths=(8, 16)) -> Checkpoint:
    torch.manual_seed(0)
    model = build_model("unet", widths=list(widths))
    return Checkpoint(model, "unet", {"widths": list(widths)}, Normalizer(vst=True, scale=BACKBONE_SCALE), name="tiny")


def test_grid_masks_cover_every_pixel_exactly_once_per_cycle():
    g = 4
    cover = sum(grid_mask(13, 11, g, p).int() for p in range(g * g))
    assert torch.all(cover == 1)
    assert grid_mask(8, 8, g, 0).sum() == 4
    with pytest.raises(ValueError):
        grid_mask(8, 8, 1, 0)


def test_masked_pixel_values_never_reach_the_loss_through_the_input():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16)
    for phase in range(16):
        mask = grid_mask(16, 16, 4, phase)
        changed = x.clone()
        changed[..., mask] = torch.rand(int(mask.sum()) * 2).reshape(2, 1, -1) * 100  # only hidden pixels differ
        # The network input is identical whatever the hidden pixels hold...
        assert torch.equal(masked_input(x, mask), masked_input(changed, mask))
    # ...so the gradient of the loss w.r.t. a hidden pixel flows only through the target, never the input path.
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    xin = x.clone().requires_grad_(True)
    mask = grid_mask(16, 16, 4, 5)
    pred = model(masked_input(xin, mask))
    pred[..., mask].sum().backward()  # prediction only (no target term)
    assert torch.all(xin.grad[..., mask] == 0)
    assert noise2self_loss(model, x, phase=5, grid=4).item() > 0


def test_split_strips_keeps_validation_pixels_out_of_training():
    im = np.arange(100 * 40, dtype=np.float32).reshape(100, 40)
    train, val = split_strips([im], 0.2)
    assert train[0].shape == (80, 40) and val[0].shape == (20, 40)
    assert set(train[0].ravel()).isdisjoint(set(val[0].ravel()))


def _sim_data(n=4, size=64, peak=(20, 60), seed=3):
    pairs = list(simulated_pairs(n, size, seed=seed, min_photons=peak[0], max_photons=peak[1]))
    norm = pairs[0].normalizer
    return pairs, norm


def test_fit_loop_time_budget_cancel_and_reproducibility():
    pairs, _ = _sim_data()
    data = ImageSet([p.normalizer.forward(p.noisy) for p in pairs], [p.normalizer.forward(p.clean) for p in pairs])

    def run(seed, **kw):
        model = tiny_checkpoint().model
        res = fit(model, PatchSampler(data, 32, 4, seed=seed), PatchSampler(data, 32, 4, seed=seed + 1),
                  objective="supervised", lr=1e-3, seed=seed, steps_per_validation=5, **kw)
        return res, torch.cat([p.flatten() for p in model.parameters()])

    a, wa = run(1, max_steps=10)
    b, wb = run(1, max_steps=10)
    assert torch.equal(wa, wb) and a.best_val_loss == b.best_val_loss  # seeded runs are identical
    assert a.stopped == "max_steps" and a.best_val_loss < a.initial_val_loss
    budget, _ = run(2, max_steps=100000, time_budget_s=1.0)
    assert budget.stopped == "time_budget" and budget.elapsed_s < 10
    cancel = threading.Event()
    cancel.set()
    cancelled, _ = run(3, max_steps=100, cancel=cancel)
    assert cancelled.stopped == "cancelled" and cancelled.steps == 0


def test_early_stopping_with_patience():
    pairs, _ = _sim_data(2)
    data = ImageSet([p.normalizer.forward(p.noisy) for p in pairs], [p.normalizer.forward(p.clean) for p in pairs])
    res = fit(tiny_checkpoint().model, PatchSampler(data, 32, 4), PatchSampler(data, 32, 4, seed=1),
              objective="supervised", lr=1e-12, patience=2, steps_per_validation=1, max_steps=1000)
    assert res.stopped == "early_stop" and res.steps <= 10


def _one_experiment(n=4, size=64):
    """Frames of one experiment: one simulated camera, several fields, ~20 photons peak; plus long-exposure references."""
    from simulators.config import load_microscope_config
    from simulators.microscope import SimulatedMicroscope

    cfg = load_microscope_config(roi_width=size, roi_height=size, light_power=5.0, exposure_ms=20.0,
                                 sample=dict(slide_width=512, slide_height=512, peak_rate=20000.0, motion=0.0))
    scope = SimulatedMicroscope(cfg)
    low, ref, truth = [], [], []
    for k in range(n):
        scope.set_position(x_um=k * 13.0, y_um=k * 7.0)
        scope.set_exposure(20.0)
        f = scope.snap()
        low.append(f.image)
        truth.append(f.truth)
        ref.append(np.mean([scope.snap().image for _ in range(16)], axis=0))  # average of 16 live-setting frames
    return low, ref, truth


@pytest.mark.parametrize("mode", ["self", "pairs"])
def test_finetuning_the_shipped_backbone_beats_raw_and_does_not_lose_to_the_backbone(mode):
    from livedenoise.checkpoint import load_backbone
    from livedenoise.training.data import normalizer_for

    low, ref, truth = _one_experiment()
    backbone = load_backbone("fast")
    before = [p.clone() for p in backbone.model.parameters()]
    cfg = TrainingConfig(patch_size=32, batch_size=8, max_steps=20, steps_per_validation=10, patience=20)
    res = finetune(backbone, low, ref if mode == "pairs" else None, training=cfg, time_budget_s=600, device="cpu")
    assert res.mode == mode and res.fit.steps == 20 and res.fit.best_val_loss <= res.fit.initial_val_loss
    assert res.fit.objective == ("supervised" if mode == "pairs" else "noise2same")
    assert all(torch.equal(a, b) for a, b in zip(before, backbone.model.parameters()))  # backbone untouched
    bb = Denoiser(backbone, normalizer=normalizer_for(low, like=backbone.normalizer), device="cpu")
    den = Denoiser(res.checkpoint, device="cpu")
    raw_psnr = np.mean([score(t, n.astype(np.float32)).psnr for t, n in zip(truth, low)])
    bb_psnr = np.mean([score(t, bb.denoise(n)).psnr for t, n in zip(truth, low)])
    new_psnr = np.mean([score(t, den.denoise(n)).psnr for t, n in zip(truth, low)])
    assert new_psnr > raw_psnr + 2.0
    assert new_psnr > bb_psnr - 0.5  # early stopping on held-out data keeps the backbone if nothing better is found
    assert res.checkpoint.metadata["training"]["backbone"] == "backbone-fast"


def test_finetune_rejects_mismatched_pairs_and_bad_images():
    with pytest.raises(InputDataError, match="pairs must match"):
        finetune(tiny_checkpoint(), [np.ones((16, 16))] * 2, [np.ones((16, 16))])
    with pytest.raises(InputDataError, match="NaN|finite"):
        finetune(tiny_checkpoint(), [np.full((16, 16), np.nan)])


def test_match_intensity_recovers_affine_relation():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1000, (32, 32))
    noisy = 0.1 * clean + 95 + rng.normal(0, 1, clean.shape)
    np.testing.assert_allclose(match_intensity(clean, noisy), 0.1 * clean + 95, atol=0.5)


def test_pair_folder_layout_and_errors(tmp_path):
    (tmp_path / "setA").mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / "setA" / f"{name}_noisy.tif", np.zeros((8, 8), np.uint16))
        tifffile.imwrite(tmp_path / "setA" / f"{name}_clean.tif", np.ones((8, 8), np.uint16))
    pairs = load_pair_folder(tmp_path)
    assert [(p.set, p.name) for p in pairs] == [("setA", "a"), ("setA", "b")]
    tifffile.imwrite(tmp_path / "setA" / "c_noisy.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(InputDataError, match="c_noisy.tif: has no partner c_clean.tif"):
        load_pair_folder(tmp_path)
    (tmp_path / "setA" / "c_noisy.tif").write_bytes(b"not a tiff")
    tifffile.imwrite(tmp_path / "setA" / "c_clean.tif", np.ones((8, 8), np.uint16))
    with pytest.raises(InputDataError, match="c_noisy.tif: not a readable TIFF"):
        load_pair_folder(tmp_path)
    with pytest.raises(InputDataError, match="not found"):
        load_pair_folder(tmp_path / "missing")


def test_pretrain_and_finetune_commands(tmp_path, capsys):
    out = tmp_path / "bb.safetensors"
    assert main(["pretrain", "--preset", "fast", "--train-images", "6", "--image-size", "48", "--steps", "4",
                 "--batch-size", "2", "--patch-size", "32", "--device", "cpu", "-o", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.name == "backbone-fast" and ckpt.training["steps"] == 4
    assert main(["pretrain", "--preset", "fast", "-o", str(out)]) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    stack = np.stack([p.noisy for p in simulated_pairs(2, 48, seed=1)])
    tifffile.imwrite(tmp_path / "movie.tif", stack)
    model = tmp_path / "adapted.safetensors"
    # Nothing learned within the budget: a clear error and no file, rather than a relabelled backbone.
    assert main(["finetune", "--images", str(tmp_path / "movie.tif"), "--backbone", str(out), "--time-budget", "0.001",
                 "--device", "cpu", "-o", str(model)]) == 2
    assert "found no improvement" in capsys.readouterr().err and not model.exists()
    with pytest.raises(SystemExit):
        main(["finetune", "--images", str(tmp_path / "movie.tif"), "--time-budget", "-1", "-o", str(model)])
    pair_dir = tmp_path / "pairs"
    pair_dir.mkdir()
    for i, p in enumerate(simulated_pairs(3, 64, seed=2, min_photons=20, max_photons=40)):
        tifffile.imwrite(pair_dir / f"f{i}_noisy.tif", p.noisy)
        tifffile.imwrite(pair_dir / f"f{i}_clean.tif", p.clean)
    assert main(["finetune", "--pairs", str(pair_dir), "--backbone", str(out), "--time-budget", "120",
                 "--device", "cpu", "-o", str(model)]) == 0
    adapted = load_checkpoint(model)
    assert adapted.training["mode"] == "pairs" and adapted.training["images"] == 3
    assert adapted.training["best_val_loss"] < adapted.training["initial_val_loss"]
    assert main(["finetune", "--images", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "nope.tif: file not found" in capsys.readouterr().err
