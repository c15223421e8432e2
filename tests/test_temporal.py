"""The temporal backbone: a causal window U-Net built from a 2-D one, its training windows, and how it is run."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from livedenoise.errors import ConfigError
from livedenoise.inference import Denoiser
from livedenoise.models import PRESETS, build_model, build_preset, model_is_temporal
from livedenoise.models.temporal import (
    MotionAdaptiveFusion,
    TemporalUNet,
    frame_shift,
    shift_frame,
    temporal_from_frame_model,
)
from livedenoise.normalization import Normalizer
from livedenoise.training.synthetic import CleanBank
from livedenoise.training.timelapse import MotionRecipe, TimelapseSampler

NORM = Normalizer(offset=100.0, gain=2.0, noise_b=2.25, scale=10.0)


def _frames(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (2.0 * rng.poisson(30.0, shape) + rng.normal(0, 3, shape) + 100.0).astype(np.float32)


def _temporal(seed: int = 0, window: int = 5, align: bool = True) -> TemporalUNet:
    torch.manual_seed(seed)
    return temporal_from_frame_model(build_model("unet", widths=[4, 8]), window=window, align=align)


def _reference_push(model: TemporalUNet, frames: np.ndarray) -> np.ndarray:
    """Direct model call on the last ``window`` frames: what Denoiser.push must reproduce."""
    with torch.no_grad():
        x = NORM.forward_torch(torch.from_numpy(frames[-model.window:]))[None, None]
        return NORM.inverse_torch(model.eval()(x)[0, 0]).numpy()


def test_temporal_backbone_is_the_2d_backbone_where_neighbours_add_nothing() -> None:
    torch.manual_seed(0)
    frame_model = build_model("unet", widths=[4, 8, 16])
    model = temporal_from_frame_model(frame_model, window=5).eval()
    assert model_is_temporal(model) and model.window == 5
    x = torch.randn(2, 1, 5, 24, 40)
    with torch.no_grad():
        ref = frame_model(x[:, :, -1])
        # identical frames: the fused result is the 2-D result whatever the weights
        same = x[:, :, -1:].expand(-1, -1, 5, -1, -1)
        np.testing.assert_allclose(model(same).numpy(), ref.numpy(), atol=1e-5)
        # no trust in neighbours: the 2-D result
        model.fusion.trust.fill_(-1e4)
        np.testing.assert_allclose(model(x).numpy(), ref.numpy(), atol=1e-5)


def test_temporal_backbone_refuses_what_it_cannot_start_from() -> None:
    with pytest.raises(ConfigError, match="residual 1-channel 2-D U-Net"):
        temporal_from_frame_model(build_model("unet", widths=[4, 8], residual=False))
    with pytest.raises(ConfigError, match="window"):
        TemporalUNet(window=1)


def test_fusion_averages_agreeing_neighbours_and_ignores_moving_ones() -> None:
    fusion = MotionAdaptiveFusion(lags=2, sigma=1.0, align=False)
    with torch.no_grad():
        fusion.trust.fill_(1e4)  # full trust where frames agree
        fusion.log_h.fill_(math.log(0.2))
    rng = np.random.default_rng(0)
    static = torch.from_numpy(rng.normal(0, 0.01, (1, 3, 32, 32)).astype(np.float32)) + 1.0
    fusion.requires_grad_(False)
    fused = fusion(static, 2)
    np.testing.assert_allclose(fused.numpy(), static.mean(dim=1).numpy(), atol=1e-3)  # an average of 3 frames
    moved = static.clone()
    moved[:, 0, 8:16, 8:16] += 5.0  # an object that is elsewhere in the oldest frame
    fused = fusion(moved, 2)
    region = (slice(None), slice(10, 14), slice(10, 14))
    np.testing.assert_allclose(fused[region].numpy(), moved[:, 1:].mean(dim=1)[region].numpy(), atol=1e-3)


@pytest.mark.parametrize("shape", [(3, 40, 33), (1, 2, 3), (2, 7, 1)])
@pytest.mark.parametrize("sigma", [1.0, 1.7])
def test_the_fusion_s_blur_is_the_gaussian_convolution_with_replicated_borders(shape: tuple[int, ...],
                                                                                  sigma: float) -> None:
    """The blur is written as shifted sums for speed; it must equal the separable convolution it replaces, also on
    frames smaller than the kernel (the border replicated), and keep gradients for the fusion's training."""
    import torch.nn.functional as F

    fusion = MotionAdaptiveFusion(4, sigma=sigma)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    r, k = fusion.radius, torch.tensor(fusion._blur.taps).view(1, 1, 1, -1)
    want = F.conv2d(F.pad(x[:, None], (r, r, 0, 0), mode="replicate"), k)
    want = F.conv2d(F.pad(want, (0, 0, r, r), mode="replicate"), k.transpose(-1, -2))[:, 0]
    got = fusion._blur(x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (g_got,) = torch.autograd.grad(got.square().sum(), x)
    (g_want,) = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)


def test_drifting_frames_are_aligned_before_they_are_averaged() -> None:
    rng = np.random.default_rng(1)
    scene = torch.from_numpy(rng.random((60, 70)).astype(np.float32))
    from scipy.ndimage import gaussian_filter

    scene = torch.from_numpy(gaussian_filter(scene.numpy(), 2.0))
    assert frame_shift(torch.roll(scene, (2, -3), (0, 1)), scene, 8) == (-2, 3)
    assert frame_shift(scene, scene, 8) == (0, 0)
    moved, valid = shift_frame(scene, 2, -3)
    assert (torch.equal(moved[2:, :-3], scene[:-2, 3:]) and float(valid[:2].sum()) == 0
            and float(valid[:, -3:].sum()) == 0)
    drift = torch.stack([shift_frame(scene, -2 * (2 - k), 1 * (2 - k))[0] for k in range(3)])[None]  # newest: k = 2
    aligned = MotionAdaptiveFusion(lags=2, sigma=1.0, align=True)
    fixed = MotionAdaptiveFusion(lags=2, sigma=1.0, align=False)
    for f in (aligned, fixed):
        f.requires_grad_(False)
        f.trust.fill_(1e4)
        f.log_h.fill_(math.log(0.02))
    inner = (0, slice(8, -8), slice(8, -8))
    noisy = drift + torch.from_numpy(rng.normal(0, 0.01, drift.shape).astype(np.float32))
    err_aligned = float((aligned(noisy, 2)[inner] - scene[inner[1:]]).pow(2).mean())
    err_fixed = float((fixed(noisy, 2)[inner] - scene[inner[1:]]).pow(2).mean())
    err_alone = float((noisy[0, 2][inner[1:]] - scene[inner[1:]]).pow(2).mean())
    assert err_aligned < err_alone / 2.5  # three frames averaged after alignment
    assert err_fixed > err_alone / 1.5  # without alignment the drifted frames are (mostly) rejected


def test_fused_series_equals_the_window_at_every_frame() -> None:
    fusion = MotionAdaptiveFusion(lags=2, sigma=1.0)
    with torch.no_grad():
        fusion.trust.copy_(torch.tensor([1.0, -0.5]))
    d = torch.randn(7, 12, 10) * 0.05 + torch.linspace(0, 1, 7)[:, None, None] * 0.1
    with torch.no_grad():
        centred = fusion.fuse_series(d, causal=False).fused
        causal = fusion.fuse_series(d, causal=True).fused
        for t in range(7):
            lo, hi = max(0, t - 2), min(7, t + 3)
            np.testing.assert_allclose(centred[t].numpy(), fusion(d[None, lo:hi], t - lo)[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(causal[t].numpy(), fusion(d[None, max(0, t - 2):t + 1], min(t, 2))[0].numpy(),
                                       atol=1e-5)


def test_temporal_preset_is_the_fused_network_and_cnnt_stays_available() -> None:
    model, arch, kwargs = build_preset("temporal")
    assert arch == "unet-temporal" and isinstance(model, TemporalUNet) and kwargs["window"] == 5
    assert PRESETS["temporal"][1]["widths"] == PRESETS["fast"][1]["widths"]  # its 2-D stage is the fast model
    assert build_preset("cnnt")[1] == "cnnt"


def test_live_push_keeps_each_frame_s_2d_result_and_fuses_the_window() -> None:
    model = _temporal()
    with torch.no_grad():
        model.fusion.trust.copy_(torch.tensor([2.0, 1.0, 0.0, -1.0]))
        model.fusion.log_h.fill_(math.log(0.5))
    den = Denoiser(model, NORM, device="cpu", second_pass=False)
    assert den.is_temporal and den.window == 5
    frames = _frames((8, 24, 20))
    for t in range(8):
        out = den.push(frames[t])
        np.testing.assert_allclose(out, _reference_push(model, frames[:t + 1]), rtol=1e-4, atol=1e-2,
                                   err_msg=f"frame {t}")
    # streams are separate: a second consumer starts its own window
    np.testing.assert_allclose(den.push(frames[0], stream="recorder"), _reference_push(model, frames[:1]), rtol=1e-4,
                               atol=1e-2)
    den.reset()
    np.testing.assert_allclose(den.push(frames[7]), _reference_push(model, frames[7:8]), rtol=1e-4, atol=1e-2)


def test_the_recorder_reuses_the_display_s_2d_results_and_the_cache_stays_bounded(monkeypatch) -> None:
    """The display (skipping frames) and the recorder (every frame) push the same frames: each frame's 2-D pass
    runs once, and the recorder's fused outputs are exactly a lone recorder's."""
    import livedenoise.inference as inference

    model = _temporal(2)
    with torch.no_grad():
        model.fusion.trust.fill_(1.0)
        model.fusion.log_h.fill_(math.log(0.5))
    frames = _frames((8, 24, 20), seed=3)
    den = Denoiser(model, NORM, device="cpu", second_pass=False)
    passes = []
    real = den._denoised_units
    monkeypatch.setattr(den, "_denoised_units", lambda engine, x: passes.append(len(x)) or real(engine, x))
    shown = [0, 1, 3, 4, 6, 7]
    for t in range(8):
        if t in shown:
            den.push(frames[t], stream="display")
        recorded = den.push(frames[t], stream="recorder")
        np.testing.assert_allclose(recorded, _reference_push(model, frames[:t + 1]), rtol=1e-4, atol=1e-2,
                                   err_msg=f"frame {t}")
    assert sum(passes) == 8 and den.shared_hits == len(shown)
    # a frame with the same pixels as another is the same frame: a copy is a hit, one changed pixel is not
    den.push(frames[7].copy(), stream="other")
    changed = frames[7].copy()
    changed[0, 0] += 1
    den.push(changed, stream="other")
    assert sum(passes) == 9 and den.shared_hits == len(shown) + 1
    # bounded: at most SHARED_RESULTS_MAX frames (and SHARED_RESULTS_BYTES) are kept
    monkeypatch.setattr(inference, "SHARED_RESULTS_MAX", 3)
    for f in _frames((6, 24, 20), seed=4):
        den.push(f, stream="display")
    assert len(den._shared) == 3
    assert den._shared_bytes == sum(d.numel() * d.element_size() + (0 if sp is None else sp.numel() * sp.element_size())
                                    for _, d, sp in den._shared.values()) > 0
    den.reset()
    assert len(den._shared) == 0 and den._shared_bytes == 0


def test_a_stack_is_fused_on_both_sides_and_tiling_changes_nothing() -> None:
    model = _temporal(1, align=False)  # on pure noise a border pixel can tip the drift estimate
    with torch.no_grad():
        model.fusion.trust.copy_(torch.tensor([2.0, 1.0, 0.0, -1.0]))
        model.fusion.log_h.fill_(math.log(0.5))
    stack = _frames((9, 40, 36))
    out = Denoiser(model, NORM, device="cpu", second_pass=False).denoise_stack(stack)
    with torch.no_grad():
        d = model.frame(NORM.forward_torch(torch.from_numpy(stack))[:, None])[:, 0]
        want = NORM.inverse_torch(model.fusion.fuse_series(d, causal=False).fused).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-2)
    tiled = Denoiser(model, NORM, device="cpu", second_pass=False, tile_size=32, batch_size=1).denoise_stack(stack)
    inner = (slice(None), slice(14, -14), slice(14, -14))  # tiles pad frame borders differently (as for 2-D models)
    np.testing.assert_allclose(tiled[inner], out[inner], rtol=1e-4, atol=1e-2)
    series = Denoiser(model, NORM, device="cpu", second_pass=False).denoise_stack(np.stack([stack, stack]))
    np.testing.assert_allclose(series[1], out, rtol=1e-5, atol=1e-3)


def test_a_temporal_backbone_has_a_fixed_window() -> None:
    with pytest.raises(ConfigError, match="fixed window of 5 frames"):
        Denoiser(_temporal(), NORM, device="cpu", window=3)


def _bank(n: int = 6, size: int = 96, seed: int = 0) -> CleanBank:
    rng = np.random.default_rng(seed)
    fields = np.zeros((n, size, size), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(20):
            cy, cx = rng.uniform(0, size, 2)
            fields[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    return CleanBank(fields / fields.max())


def test_timelapse_windows_share_a_scene_with_independent_noise_per_frame() -> None:
    still = MotionRecipe(drift_share=0, jitter=0, max_spots=0, bleach_share=0, flicker=0, cut_share=0)
    sampler = TimelapseSampler(_bank(), 32, 8, window=5, motion=still, seed=3)
    x, y = sampler.sample()
    assert x.shape == (8, 1, 5, 32, 32) and y.shape == (8, 1, 32, 32)
    frames = x[:, 0]
    err_one = float(((frames[:, -1] - y[:, 0]) ** 2).mean())
    err_mean = float(((frames.mean(dim=1) - y[:, 0]) ** 2).mean())
    assert err_mean < err_one / 2.5  # 5 independent draws of the same scene average down (4-5x, less with FPN)
    assert not torch.equal(frames[:, 0], frames[:, 1])


def test_timelapse_windows_move_and_report_moving_pixels() -> None:
    moving = MotionRecipe(drift_share=1.0, max_drift=2.0, max_spots=12, cut_share=0)
    sampler = TimelapseSampler(_bank(), 32, 8, window=5, motion=moving, seed=4)
    _x, _y = sampler.sample()
    assert sampler.last_moving is not None and sampler.last_moving.shape == (8, 32, 32)
    assert bool(sampler.last_moving.any())
    a, b = sampler.fixed_batches(2), sampler.fixed_batches(2)  # validation batches are reproducible
    assert torch.equal(a[1][0], b[1][0]) and torch.equal(a[1][1], b[1][1])


def test_pretrain_turns_a_2d_backbone_into_a_temporal_one(tmp_path: Path) -> None:
    from livedenoise.checkpoint import Checkpoint, load_checkpoint
    from livedenoise.training.pretrain import pretrain

    torch.manual_seed(0)
    base = Checkpoint(model=build_model("unet", widths=[4, 8]), arch="unet", arch_kwargs={"widths": [4, 8]},
                      normalizer=Normalizer(vst=True, scale=10.0), metadata={"training": {"total_steps": 7}},
                      path=None, name="tiny-2d")
    out = tmp_path / "t.safetensors"
    res = pretrain("temporal", init=base, bank_fields=4, bank_size=64, patch_size=32, batch_size=2, max_steps=3,
                   steps_per_validation=1, validation_batches=1, cache_dir=tmp_path, output=out, device="cpu")
    ckpt = load_checkpoint(out)
    assert ckpt.arch == "unet-temporal" and isinstance(ckpt.model, TemporalUNet) and ckpt.model.window == 5
    assert ckpt.name == "backbone-temporal"
    for k, v in base.model.state_dict().items():  # the 2-D stage is frozen: exactly the init's
        assert torch.equal(ckpt.model.frame.state_dict()[k], v), k
    stages = ckpt.metadata["training"]["stages"]
    assert "tiny-2d" in stages[-2]["note"] and "fusion" in stages[-2]["note"]
    assert stages[-1]["steps"] == res.fit.steps == 3 and ckpt.metadata["training"]["total_steps"] == 10
    assert "fusion only" in stages[-1]["trained"] and ckpt.metadata["training"]["data"]["window"] == 5
    assert set(ckpt.metadata["metrics"]["fusion"]) == {"trust", "h", "sigma", "align", "max_shift"}
    with pytest.raises(ValueError, match="synthetic time-lapse windows only"):
        pretrain("temporal", init=base, data="simulated", max_steps=1, device="cpu")
    with pytest.raises(ValueError, match="built on a 2-D backbone"):
        pretrain("temporal", max_steps=1, device="cpu")


def test_fine_tuning_adapts_the_2d_stage_and_keeps_the_fusion(tmp_path: Path) -> None:
    from livedenoise.checkpoint import Checkpoint, load_checkpoint
    from livedenoise.config import TrainingConfig
    from livedenoise.training.finetune import finetune

    model = _temporal(3)
    with torch.no_grad():
        model.fusion.trust.copy_(torch.tensor([1.5, 0.5, -0.5, -1.0]))
    backbone = Checkpoint(model=model, arch="unet-temporal", arch_kwargs=model.arch_kwargs,
                          normalizer=Normalizer(vst=True, scale=10.0), metadata={"training": {"steps": 10}},
                          path=None, name="tiny-temporal")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    clean = [np.full((48, 48), 400.0) + 300.0 * (rng.random((48, 48)) > 0.9) for _ in range(3)]
    noisy = [rng.poisson(c).astype(np.float32) for c in clean]
    cfg = TrainingConfig(max_steps=30, patch_size=32, batch_size=2, steps_per_validation=10, time_budget_s=60)
    res = finetune(backbone, noisy, clean, training=cfg, device="cpu", seed=0)
    out = res.checkpoint
    assert out.arch == "unet-temporal" and isinstance(out.model, TemporalUNet)
    assert res.adapted and res.fit.steps == 30
    assert "the 2-D stage on single frames" in out.metadata["training"]["adapted_part"]
    assert torch.equal(out.model.fusion.trust, before["fusion.trust"])
    changed = any(not torch.equal(out.model.frame.state_dict()[k], before["frame." + k])
                  for k in out.model.frame.state_dict())
    assert changed
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the backbone itself is untouched
    # the second pass keeps the backbone's 2-D stage, with the backbone's inverse; saved and loaded as such
    assert out.model.averages is not None and out.model.averages_inversion == "algebraic"
    assert all(torch.equal(v, before["frame." + k]) for k, v in out.model.averages.state_dict().items())
    assert out.arch_kwargs["averages_stage"] is True and out.arch_kwargs["averages_inversion"] == "algebraic"
    out.save(tmp_path / "adapted.safetensors")
    loaded = load_checkpoint(tmp_path / "adapted.safetensors").model
    assert isinstance(loaded, TemporalUNet) and loaded.averages is not None
    assert all(torch.equal(v, out.model.state_dict()[k]) for k, v in loaded.state_dict().items())
    # a second fine-tune of the adapted model keeps the averages stage it has (the backbone's), not the adapted one
    again = finetune(out, noisy, clean, training=cfg, device="cpu", seed=1).checkpoint
    assert all(torch.equal(v, before["frame." + k]) for k, v in again.model.averages.state_dict().items())
    # an untrained start (no training record: a from-scratch comparison) has no 2-D stage worth keeping
    scratch = Checkpoint(model=_temporal(4), arch="unet-temporal", arch_kwargs=model.arch_kwargs,
                         normalizer=Normalizer(vst=True, scale=10.0), metadata={}, path=None, name="scratch")
    res = finetune(scratch, noisy, clean, training=cfg, device="cpu", seed=0)
    assert res.adapted and res.checkpoint.model.averages is None
    assert res.checkpoint.metadata["training"]["adapted_part"] == "the 2-D stage (fusion kept)"


def test_a_second_pass_inversion_needs_its_own_stage_and_a_known_name() -> None:
    with pytest.raises(ConfigError, match="averages_inversion"):
        TemporalUNet(averages_inversion="algebraic")  # no stage of its own: it would invert the first pass's net
    with pytest.raises(ConfigError, match="averages_inversion"):
        TemporalUNet(averages_stage=True, averages_inversion="biased")
    assert TemporalUNet(averages_stage=True, averages_inversion="unbiased").averages is not None


def _simulated_time_lapse(photons: float, frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A drifting slide with random-walking puncta through the exact camera model; (noisy, the sample in ADU)."""
    from simulators.config import MicroscopeConfig, SampleConfig
    from simulators.microscope import SimulatedMicroscope

    sample = SampleConfig(slide_width=512, slide_height=512, peak_rate=photons / 0.02,
                          background_rate=0.05 * photons / 0.02, motion=10.0, drift=(25.0, 15.0), density=1.5,
                          seed=seed)
    mic = SimulatedMicroscope(MicroscopeConfig(camera="andor-zyla-4.2", sample=sample, roi_width=size, roi_height=size,
                                               exposure_ms=20.0, light_power=100.0, seed=seed + 1))
    gain, offset = float(np.median(mic.camera.maps.gain)), float(np.median(mic.camera.maps.offset))
    noisy, flat = [], []
    for _ in range(frames):
        electrons = np.minimum(mic.camera.mean_electrons(mic.expected_photons(), 0.02), mic.camera.config.full_well)
        flat.append(electrons * gain + offset)
        noisy.append(mic.snap().image)
    return np.stack(noisy), np.stack(flat).astype(np.float32)


def test_the_shipped_temporal_backbone_beats_the_2d_one_on_a_simulated_time_lapse() -> None:
    """Ground truth from the simulator: fusing neighbours must beat the same 2-D network frame by frame."""
    from livedenoise.checkpoint import load_backbone
    from livedenoise.evaluate import with_normalizer
    from livedenoise.metrics import score

    noisy, truth = _simulated_time_lapse(10.0, frames=8, size=96, seed=5)
    temporal, fast = load_backbone("temporal"), load_backbone("fast")

    def psnr(out: np.ndarray) -> float:
        return float(np.mean([score(t, o).psnr for t, o in zip(truth, out, strict=True)]))

    frame_by_frame = psnr(Denoiser(with_normalizer(fast, list(noisy)), device="cpu").denoise_stack(noisy))
    scores = {}
    for second in (False, True):
        den = Denoiser(with_normalizer(temporal, list(noisy)), device="cpu", second_pass=second)
        scores[second] = psnr(den.denoise_stack(noisy)), psnr(np.stack([den.push(f) for f in noisy]))
    (batch, live), (batch2, live2) = scores[False], scores[True]
    assert batch > frame_by_frame + 0.5, (batch, frame_by_frame)
    assert live > frame_by_frame + 0.25, (live, frame_by_frame)
    # the second pass: the motion-compensated average of the raw frames, denoised once more, adds to the fusion
    assert batch2 > batch + 0.3, (batch2, batch)
    assert live2 > live + 0.2, (live2, live)


def test_a_stack_runs_the_2d_stage_once_per_frame_across_chunks() -> None:
    model = _temporal(4, align=False)
    # chunks of 8 frames, each needing 4 neighbours per side
    den = Denoiser(model, NORM, device="cpu", second_pass=False, batch_size=1)
    assert isinstance(den.model, TemporalUNet)  # the whole network, not only its 2-D stage
    seen = []
    den.model.frame.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    stack = _frames((20, 24, 24))
    out = den.denoise_stack(stack)
    assert sum(seen) == 20
    with torch.no_grad():
        d = model.frame(NORM.forward_torch(torch.from_numpy(stack))[:, None])[:, 0]
        want = NORM.inverse_torch(model.fusion.fuse_series(d, causal=False).fused).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-2)


def test_after_a_swap_a_live_window_holds_only_the_new_model_s_frames() -> None:
    first, second = _temporal(5), _temporal(6)
    for m in (first, second):
        with torch.no_grad():
            m.fusion.trust.fill_(2.0)
            m.fusion.log_h.fill_(math.log(0.5))
    den = Denoiser(first, NORM, device="cpu", second_pass=False)
    frames = _frames((4, 24, 20))
    for f in frames[:3]:
        den.push(f)
    den.swap((second, NORM))
    np.testing.assert_allclose(den.push(frames[3]), _reference_push(second, frames[3:4]), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(den.push(frames[2]), _reference_push(second, frames[[3, 2]]), rtol=1e-4, atol=1e-2)


def test_a_denoiser_takes_a_shipped_backbone_by_name() -> None:
    den = Denoiser("temporal", device="cpu")
    assert den.is_temporal and den.name == "backbone-temporal" and isinstance(den.model, TemporalUNet)
    assert not Denoiser("fast", device="cpu").is_temporal


@pytest.mark.parametrize("frame_name", ["standard", "lite"])
def test_a_temporal_backbone_of_other_widths_is_that_2d_stage_with_the_shipped_fusion(frame_name: str) -> None:
    """``temporal-standard`` (batch time-lapses) and ``temporal-lite`` (live at 512² and more on a CPU) are made by
    ``benchmarks/swap_temporal_frame.py``: that backbone's weights as the 2-D stage, the shipped temporal backbone's
    fusion, and the history of both."""
    from livedenoise.checkpoint import load_backbone

    both = load_backbone(f"temporal-{frame_name}")
    frame, temporal = load_backbone(frame_name), load_backbone("temporal")
    assert isinstance(both.model, TemporalUNet) and list(both.model.widths) == list(frame.model.widths)
    frame_weights = frame.model.state_dict()
    assert set(both.model.frame.state_dict()) == set(frame_weights)  # every weight of the 2-D backbone, no other
    assert all(torch.equal(v, frame_weights[k]) for k, v in both.model.frame.state_dict().items())
    assert all(torch.equal(v, temporal.model.fusion.state_dict()[k])
               for k, v in both.model.fusion.state_dict().items())
    fusion_steps = temporal.training["total_steps"] - load_backbone("fast").training["total_steps"]
    assert both.training["total_steps"] == frame.training["total_steps"] + fusion_steps
    assert "copied in, not retrained" in both.training["stages"][-1]["note"]
    # nothing measured with the fast 2-D stage is passed off as this model's
    assert "best_val_loss" not in both.training and set(both.metadata["metrics"]) == {"fusion"}
    assert both.training["continued_from"] == f"backbone-{frame_name}, with the fusion of backbone-temporal"
    den = Denoiser(f"temporal-{frame_name}", device="cpu")
    assert den.is_temporal and den.window == 5
    stack = np.random.default_rng(0).poisson(20.0, (6, 40, 40)).astype(np.float32) * 2 + 100
    out = den.denoise_stack(stack)
    assert out.shape == stack.shape and np.all(np.isfinite(out))
    assert float(out.std()) < 0.5 * float(stack.std())  # a flat noisy field comes out much flatter
