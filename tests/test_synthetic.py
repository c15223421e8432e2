"""The synthetic pretraining pipeline: structure renderers, the clean bank, the per-batch camera noise, pretrain."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from livedenoise.checkpoint import load_checkpoint
from livedenoise.cli import main
from livedenoise.normalization import gat_torch
from livedenoise.training.synthetic import CleanBank, NoiseRecipe, SyntheticPairSampler, noisy_pair
from simulators.structures import KINDS, STRAIGHT_FILAMENTS, render_field


def test_every_structure_kind_renders_a_finite_field_with_structure():
    rng = np.random.default_rng(0)
    for name, render in KINDS.items():
        f = render(rng, 96)
        assert f.shape == (96, 96) and np.isfinite(f).all() and f.min() >= 0, name
        assert np.percentile(f, 99.9) > 0, f"{name} rendered an empty field"
    field = render_field(rng, 96)
    assert field.dtype == np.float32 and abs(float(np.percentile(field, 99.9)) - 1.0) < 1e-4
    with pytest.raises(ValueError, match="unknown structure kind"):
        render_field(rng, 32, ["comets"])


def test_held_out_kind_is_never_drawn():
    calls = []
    original = KINDS[STRAIGHT_FILAMENTS]
    KINDS[STRAIGHT_FILAMENTS] = lambda rng, size: calls.append(1) or original(rng, size)
    try:
        rng = np.random.default_rng(1)
        kinds = [k for k in KINDS if k != STRAIGHT_FILAMENTS]
        for _ in range(30):
            render_field(rng, 32, kinds)
    finally:
        KINDS[STRAIGHT_FILAMENTS] = original
    assert not calls


def test_clean_bank_is_cached_by_recipe(tmp_path):
    calls = []

    def render(rng, size):
        calls.append(1)
        return rng.random((size, size)).astype(np.float32)

    a = CleanBank.build(render, 3, 16, seed=0, description={"r": 1}, cache_dir=tmp_path)
    b = CleanBank.build(render, 3, 16, seed=0, description={"r": 1}, cache_dir=tmp_path)
    assert len(calls) == 3 and np.array_equal(a.fields, b.fields)  # second bank read from the cache
    CleanBank.build(render, 3, 16, seed=0, description={"r": 2}, cache_dir=tmp_path)
    assert len(calls) == 6  # a changed recipe renders anew
    assert not list(tmp_path.glob("*.partial*"))
    with pytest.raises(ValueError, match=r"\(N, S, S\)"):
        CleanBank(np.zeros((4, 4)))


def test_noise_is_unit_variance_in_stabilised_units_and_the_target_is_the_clean_transform():
    """Away from clipping and 8-bit renders, input - target is the camera noise: sd 1 in GAT units."""
    gen = torch.Generator().manual_seed(0)
    recipe = NoiseRecipe(min_photons=200, max_photons=400, render_8bit=0.0, parameter_error=0.0, max_gain_spread=0.0,
                         max_offset_spread=0.0, noisy_pixel_fraction=0.0, read_noise_spread=0.0)
    clean = torch.full((4, 1, 64, 64), 0.5)
    x, y = noisy_pair(clean, recipe, gen)
    resid = (x - y) * recipe.scale
    assert abs(float(resid.std()) - 1.0) < 0.05 and abs(float(resid.mean())) < 0.05
    # the target is exactly the transform of the noise-free image: constant for a constant field
    assert float(y.std(dim=(2, 3)).max()) < 1e-4
    # the fixed pattern is noise to the network: it raises the residual, not the target
    fp = NoiseRecipe(min_photons=200, max_photons=400, render_8bit=0.0, parameter_error=0.0, max_gain_spread=0.0,
                     max_offset_spread=0.8, noisy_pixel_fraction=0.0, read_noise_spread=0.0)
    _x2, y2 = noisy_pair(clean, fp, torch.Generator().manual_seed(0))
    assert float(y2.std(dim=(2, 3)).max()) < 1e-4


def test_8bit_renders_are_quantised_and_clipped_like_display_images():
    """Every render spans many of its 256 levels (a white level below the black one made binary images) and,
    away from clipping, its noise is still unit-variance in stabilised units (both roundings accounted for)."""
    gen = torch.Generator().manual_seed(3)
    # a dim image on a large offset: 10-30 distinct camera values, which the render must keep apart
    dim = NoiseRecipe(render_8bit=1.0, min_photons=3.0, max_photons=5.0, min_gain=2.0, max_gain=4.0, min_offset=100.0,
                      max_offset=120.0, max_background=0.0)
    clean = torch.rand(32, 1, 48, 48)
    x, y = noisy_pair(clean, dim, gen)
    assert torch.isfinite(x).all() and torch.isfinite(y).all()
    levels = [len(torch.unique(x[i])) for i in range(32)]
    assert min(levels) >= 8, levels
    bright = NoiseRecipe(render_8bit=1.0, min_photons=300, max_photons=400, max_black_clip=0.0, parameter_error=0.0,
                         max_gain_spread=0.0, max_offset_spread=0.0, noisy_pixel_fraction=0.0, read_noise_spread=0.0)
    x, y = noisy_pair(torch.full((8, 1, 64, 64), 0.5), bright, torch.Generator().manual_seed(4))
    resid = (x - y) * bright.scale
    assert abs(float(resid.std()) - 1.0) < 0.1


def test_gat_matches_the_normalizer():
    from livedenoise.normalization import Normalizer

    e = np.linspace(0, 500, 101)
    norm = Normalizer(noise_b=2.0, scale=1.0)
    np.testing.assert_allclose(gat_torch(torch.tensor(e), torch.tensor(2.0)).numpy(), norm.forward(e), rtol=1e-5)


def test_sampler_batches_are_fresh_and_validation_batches_fixed():
    bank = CleanBank(np.random.default_rng(0).random((5, 40, 40)).astype(np.float32))
    s = SyntheticPairSampler(bank, 32, 4, seed=0)
    a, b = s.sample(), s.sample()
    assert a[0].shape == (4, 1, 32, 32) and not torch.equal(a[0], b[0])
    v1, v2 = s.fixed_batches(2), s.fixed_batches(2)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(v1, v2, strict=True))


def test_pretrain_on_synthetic_pairs_records_stages_and_continues(tmp_path, capsys):
    out = tmp_path / "bb.safetensors"
    common = ["--bank-fields", "4", "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--patch-size", "32",
              "--steps-per-validation", "2", "--device", "cpu"]
    assert main(["pretrain", "--preset", "fast", "--steps", "4", *common, "-o", str(out)]) == 0
    first = load_checkpoint(out).training
    assert first["steps"] == 4 and first["total_steps"] == 4 and len(first["stages"]) == 1
    stage = first["stages"][0]
    assert stage["data"]["source"] == "synthetic" and stage["data"]["held_out"] == [STRAIGHT_FILAMENTS]
    assert list((tmp_path / "cache").glob("clean-bank-*.npy"))
    assert main(["pretrain", "--init", str(out), "--lr", "3e-4", "--steps", "2", *common, "-o", str(out),
                 "--overwrite"]) == 0
    second = load_checkpoint(out).training
    assert second["total_steps"] == 6 and [s["lr"] for s in second["stages"]] == [1e-3, 3e-4]
    assert main(["pretrain", "--hold-out", "comets", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "comets: unknown structure kind" in capsys.readouterr().err


def test_noise_is_drawn_on_the_generators_device_and_a_mismatch_is_refused():
    clean = torch.rand(2, 1, 16, 16)
    x, y = noisy_pair(clean, NoiseRecipe(), torch.Generator(device="cpu").manual_seed(0))
    assert x.device.type == y.device.type == "cpu" and x.shape == y.shape == clean.shape
    s = SyntheticPairSampler(CleanBank(np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)), 32, 2,
                             seed=0, device="cpu")
    assert s.gen.device.type == "cpu" and s.sample()[0].device.type == "cpu"
    with pytest.raises(ValueError, match="put both on one device"):
        noisy_pair(clean.to("meta"), NoiseRecipe(), torch.Generator().manual_seed(0))


def test_no_noise_tensor_is_made_on_the_default_device():
    """Every draw follows the generator: with the default device set elsewhere ("meta", which has no data), a CPU
    batch, 8-bit renders and blurred samples included, still comes out on the CPU with finite values."""
    recipe = NoiseRecipe(correlated=1.0, render_8bit=1.0)
    clean = torch.rand(3, 2, 24, 24)
    torch.set_default_device("meta")
    try:
        x, y = noisy_pair(clean, recipe, torch.Generator(device="cpu").manual_seed(1))
    finally:
        torch.set_default_device(None)
    assert x.device.type == y.device.type == "cpu" and bool(torch.isfinite(x).all()) and bool(torch.isfinite(y).all())


def test_cosine_schedule_runs_from_lr_to_the_floor_by_steps_or_by_time():
    from livedenoise.training.loop import COSINE_FLOOR, scheduled_lr

    assert scheduled_lr(1e-3, 0, 100, 0.0, None) == pytest.approx(1e-3)
    assert scheduled_lr(1e-3, 50, 100, 0.0, None) == pytest.approx(1e-3 * (1 + COSINE_FLOOR) / 2)
    assert scheduled_lr(1e-3, 100, 100, 0.0, None) == pytest.approx(1e-3 * COSINE_FLOOR)
    # a time budget ends the schedule when it ends the run, whatever the step count
    assert scheduled_lr(1e-3, 10, 10_000, 60.0, 60.0) == pytest.approx(1e-3 * COSINE_FLOOR)
    assert scheduled_lr(1e-3, 10, 10_000, 90.0, 60.0) == pytest.approx(1e-3 * COSINE_FLOOR)


def test_pretrain_with_a_cosine_schedule_records_it_and_lowers_the_rate(tmp_path, monkeypatch):
    from livedenoise.training import loop

    rates: list[float] = []
    real_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    out = tmp_path / "bb.safetensors"
    assert main(["pretrain", "--preset", "fast", "--steps", "6", "--schedule", "cosine", "--lr", "1e-3",
                 "--bank-fields", "3", "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--patch-size",
                 "32", "--steps-per-validation", "3", "--device", "cpu", "-o", str(out)]) == 0
    assert load_checkpoint(out).training["stages"][-1]["schedule"] == "cosine"
    assert len(rates) == 6 and rates[0] == pytest.approx(1e-3) and all(a > b for a, b in itertools.pairwise(rates))
    assert rates[-1] == pytest.approx(loop.scheduled_lr(1e-3, 5, 6, 0.0, None))
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        loop.fit(torch.nn.Conv2d(1, 1, 3, padding=1), None, None, objective="supervised", lr=1e-3,  # type: ignore[arg-type]
                 schedule="linear")  # type: ignore[arg-type]


def test_pretrain_in_bf16_runs_the_network_in_bf16_and_records_it(tmp_path):
    """--precision bf16: each training step's convolutions run in bf16, validations in fp32, the stage says so."""
    out = tmp_path / "bb.safetensors"
    seen: set = set()
    real_conv = torch.nn.Conv2d._conv_forward

    def spy(self, x, weight, bias):
        result = real_conv(self, x, weight, bias)
        seen.add((torch.is_grad_enabled(), result.dtype))
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Conv2d, "_conv_forward", spy)
        assert main(["pretrain", "--preset", "fast", "--steps", "4", "--precision", "bf16", "--bank-fields", "3",
                     "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--patch-size", "32",
                     "--steps-per-validation", "2", "--device", "cpu", "-o", str(out)]) == 0
    stage = load_checkpoint(out).training["stages"][-1]
    assert stage["precision"] == "bf16" and stage["steps"] == 4
    assert (True, torch.bfloat16) in seen and (False, torch.float32) in seen and (False, torch.bfloat16) not in seen
    assert main(["pretrain", "--preset", "fast", "--steps", "2", "--bank-fields", "3", "--cache-dir",
                 str(tmp_path / "cache"), "--batch-size", "2", "--patch-size", "32", "--device", "cpu", "-o",
                 str(tmp_path / "fp32.safetensors")]) == 0
    assert load_checkpoint(tmp_path / "fp32.safetensors").training["stages"][-1]["precision"] == "fp32"


def test_pretrain_writes_interim_checkpoints(tmp_path):
    from livedenoise.training.pretrain import pretrain

    out = tmp_path / "bb.safetensors"
    seen = []
    res = pretrain("fast", bank_fields=3, bank_size=64, cache_dir=tmp_path, batch_size=2, patch_size=32, max_steps=6,
                   steps_per_validation=2, checkpoint_every_s=1e-9, device="cpu", output=out,
                   progress=lambda p: seen.append(load_checkpoint(out).training["stopped"]))
    assert seen and all(s == "running (interim checkpoint)" for s in seen)
    assert load_checkpoint(out).training["steps"] == res.fit.steps == 6


def test_a_share_of_synthetic_samples_has_spatially_correlated_noise():
    """Processed frames (blurred after the camera): input and target blurred alike, noise correlated."""
    import torch

    from livedenoise.training.synthetic import NoiseRecipe, noisy_pair

    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 64), torch.linspace(0, 6, 64), indexing="ij")
    clean = (0.3 + 0.5 * (torch.sin(3 * xx) * torch.cos(2 * yy) > 0.3).float())[None, None].repeat(200, 1, 1, 1)
    x, y = noisy_pair(clean, NoiseRecipe(render_8bit=0.0), gen)
    r = (x - y)[:, 0]
    lag = torch.stack([torch.corrcoef(torch.stack([ri[:, 1:].flatten(), ri[:, :-1].flatten()]))[0, 1] for ri in r])
    share = float((lag > 0.25).float().mean())
    assert 0.05 < share < 0.3, share  # NoiseRecipe.correlated = 0.15 of the samples
    assert float(lag[lag <= 0.25].abs().max()) < 0.1  # the others keep independent camera noise
    x0, _ = noisy_pair(clean[:8], NoiseRecipe(correlated=0.0), torch.Generator().manual_seed(0))
    assert torch.isfinite(x0).all()
