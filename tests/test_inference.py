"""Denoiser: shapes, seamless tiling, stacks, temporal windows, hot swap, device choice."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from livedenoise.checkpoint import save_checkpoint
from livedenoise.device import select_device
from livedenoise.errors import ConfigError, InputDataError, LivedenoiseError
from livedenoise.inference import Denoiser
from livedenoise.models import build_model
from livedenoise.normalization import Normalizer

NORM = Normalizer(offset=100.0, gain=2.0, noise_b=2.25, scale=10.0)


def _unet(seed: int = 0, widths: tuple[int, ...] = (4, 8), **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", widths=list(widths), **kw)


def _cnnt(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnnt", channels=8, heads=2)


def _frames(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (2.0 * rng.poisson(30.0, shape) + rng.normal(0, 3, shape) + 100.0).astype(np.float32)


def _reference(model: torch.nn.Module, window: np.ndarray, index: int | None = None) -> np.ndarray:
    """Direct model call: what the Denoiser must reproduce."""
    with torch.no_grad():
        x = NORM.forward_torch(torch.from_numpy(window))
        if index is None:
            return NORM.inverse_torch(model.eval()(x[None, None])[0, 0]).numpy()
        return NORM.inverse_torch(model.eval()(x[None, None])[0, 0, index]).numpy()


@pytest.mark.parametrize("shape", [(37, 53), (1, 97), (97, 1), (64, 64)])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int32])
def test_denoise_shapes_and_dtypes(shape: tuple[int, int], dtype: type) -> None:
    den = Denoiser(_unet(), NORM, device="cpu")
    frame = _frames(shape).astype(dtype)
    out = den.denoise(frame)
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, _reference(den.model, frame.astype(np.float32)), rtol=1e-5, atol=1e-3)


def test_tiled_equals_untiled_borders_included() -> None:
    """Tiles of 64 px with overlap >= receptive field reproduce the whole-frame output everywhere: no seams,
    and at the frame's border a tile sees what the whole frame sees (no padded context)."""
    model = _unet(widths=(4, 8))
    frame = _frames((150, 203))
    whole = Denoiser(model, NORM, device="cpu", pixel_budget=10**8).denoise(frame)
    tiled_den = Denoiser(model, NORM, device="cpu", tile_size=64)
    calls: list[tuple[int, ...]] = []
    tiled_den.model.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    tiled = tiled_den.denoise(frame)
    r = tiled_den.receptive_field_radius
    assert r == 10 and tiled_den.overlap >= r
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-3)
    # the frame was really tiled: no call saw more than a 64-pixel side
    assert calls and max(max(s[-2:]) for s in calls) <= 64 and sum(s[0] for s in calls) > 4


def test_auto_tiles_are_strips_within_the_pixel_budget() -> None:
    """Above the pixel budget a frame is cut into few full-width (or full-height) strips (least recomputed margin), each
    within the budget, and the result equals the whole-frame pass."""
    from livedenoise.inference import _tile_plan

    py, px = _tile_plan(2048, 2048, 2_800_000, 8192, 64, 8)
    assert (py.count, px.count) == (2, 1) and py.tile * px.tile <= 2_800_000
    py, px = _tile_plan(300, 5000, 200_000, 8192, 64, 8)
    assert py.tile * px.tile <= 200_000 and py.count * py.core >= 300 and px.count * px.core >= 5000
    model = _unet(widths=(4, 8))
    frame = _frames((150, 203))
    den = Denoiser(model, NORM, device="cpu", pixel_budget=100 * 203)
    calls: list[tuple[int, ...]] = []
    den.model.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    out = den.denoise(frame)
    assert den.pixel_budget == 100 * 203
    assert len(calls) >= 2 and all(s[-2] * s[-1] <= 100 * 203 for s in calls)
    assert all(s[-1] == 203 for s in calls) or all(s[-2] == 150 for s in calls)  # strips, not squares
    np.testing.assert_allclose(out, Denoiser(model, NORM, device="cpu", pixel_budget=10**8).denoise(frame),
                               rtol=1e-5, atol=1e-3)


def test_cpu_pixel_budget_follows_the_model_footprint() -> None:
    """On the CPU the default budget is the activation memory over the model's bytes per pixel: a network half
    as wide runs frames twice as large whole."""
    from livedenoise.inference import CPU_ACTIVATION_BYTES
    from livedenoise.models import activation_bytes_per_pixel

    narrow, wide = _unet(widths=(4, 8)), _unet(widths=(8, 16))
    b_narrow = Denoiser(narrow, NORM, device="cpu").pixel_budget
    b_wide = Denoiser(wide, NORM, device="cpu").pixel_budget
    assert b_narrow == CPU_ACTIVATION_BYTES // activation_bytes_per_pixel(narrow)
    assert abs(b_narrow - 2 * b_wide) <= 1


def test_tiled_equals_untiled_for_deeper_net_and_layer_norm() -> None:
    model = _unet(widths=(4, 8, 16), norm="layer")
    frame = _frames((140, 130))
    den = Denoiser(model, NORM, device="cpu", tile_size=96, batch_size=3)
    r = den.receptive_field_radius
    whole = Denoiser(model, NORM, device="cpu").denoise(frame)
    np.testing.assert_allclose(den.denoise(frame)[r:-r, r:-r], whole[r:-r, r:-r], rtol=1e-5, atol=1e-3)


def test_large_frame_is_tiled_automatically(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame whose activations exceed the CPU working-memory budget is cut into calls within it."""
    import livedenoise.inference as inference

    monkeypatch.setattr(inference, "CPU_ACTIVATION_BYTES", 100 * 1024**2)
    model = _unet(widths=(4, 8))
    den = Denoiser(model, NORM, device="cpu")
    from livedenoise.models import ACTIVATION_BYTES_PER_PIXEL_CHANNEL

    assert den.pixel_budget == 100 * 1024**2 // (ACTIVATION_BYTES_PER_PIXEL_CHANNEL * 4)
    sizes: list[tuple[int, int]] = []
    den.model.register_forward_pre_hook(lambda _m, args: sizes.append(tuple(args[0].shape[-2:])))
    frame = _frames((2048, 2048)).astype(np.uint16)
    out = den.denoise(frame)
    assert out.shape == (2048, 2048) and out.dtype == np.float32 and np.isfinite(out).all()
    assert len(sizes) > 1 and all(h * w <= den.pixel_budget for h, w in sizes)


def test_instance_norm_tiling_warns(caplog: pytest.LogCaptureFixture) -> None:
    den = Denoiser(_unet(norm="instance"), NORM, device="cpu", tile_size=48)
    with caplog.at_level(logging.WARNING, logger="livedenoise"):
        den.denoise(_frames((60, 60)))
    assert "InstanceNorm" in caplog.text


def test_small_overlap_warns_and_tiny_tile_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="livedenoise"):
        Denoiser(_unet(), NORM, device="cpu", overlap=2)
    assert "seams" in caplog.text
    den = Denoiser(_unet(), NORM, device="cpu", tile_size=16)
    with pytest.raises(ConfigError, match="tile_size"):
        den.denoise(_frames((40, 40)))


def test_denoise_stack_any_leading_axes() -> None:
    den = Denoiser(_unet(), NORM, device="cpu", batch_size=4)
    stack = _frames((2, 3, 21, 30))
    out = den.denoise_stack(stack)
    assert out.shape == stack.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 2], den.denoise(stack[1, 2]), rtol=1e-5, atol=1e-3)


def test_temporal_stack_uses_centred_windows() -> None:
    model = _cnnt()
    den = Denoiser(model, NORM, device="cpu", window=3)
    assert den.is_temporal and den.window == 3
    stack = _frames((6, 20, 26))
    out = den.denoise_stack(stack)
    assert out.shape == stack.shape
    np.testing.assert_allclose(out[0], _reference(model, stack[0:3], 0), rtol=1e-5, atol=1e-3)  # shifted in
    np.testing.assert_allclose(out[3], _reference(model, stack[2:5], 1), rtol=1e-5, atol=1e-3)  # centred
    np.testing.assert_allclose(out[5], _reference(model, stack[3:6], 2), rtol=1e-5, atol=1e-3)
    # stacks of several series: leading axes kept
    assert den.denoise_stack(_frames((2, 4, 12, 12))).shape == (2, 4, 12, 12)


def test_temporal_push_keeps_rolling_window() -> None:
    model = _cnnt()
    den = Denoiser(model, NORM, device="cpu", window=3)
    frames = _frames((5, 16, 20))
    first = den.push(frames[0])
    np.testing.assert_allclose(first, _reference(model, frames[0:1], 0), rtol=1e-5, atol=1e-3)
    for f in frames[1:]:
        last = den.push(f)
    np.testing.assert_allclose(last, _reference(model, frames[2:5], 2), rtol=1e-5, atol=1e-3)
    den.reset()
    np.testing.assert_allclose(den.push(frames[4]), _reference(model, frames[4:5], 0), rtol=1e-5, atol=1e-3)


def test_push_equals_denoise_for_2d_models() -> None:
    den = Denoiser(_unet(), NORM, device="cpu")
    frame = _frames((24, 24))
    np.testing.assert_array_equal(den.push(frame), den.denoise(frame))
    assert den.window == 1 and not den.is_temporal


def test_from_checkpoint_path_and_own_copy(tmp_path: Path) -> None:
    model = _unet()
    path = save_checkpoint(tmp_path / "m.safetensors", model, arch="unet", arch_kwargs={"widths": [4, 8]},
                           normalizer=NORM, training={"window": 7}, name="mine")
    den = Denoiser(path, device="cpu")
    assert den.name == "mine" and den.normalizer == NORM and den.device == torch.device("cpu")
    frame = _frames((30, 30))
    before = den.denoise(frame)
    with torch.no_grad():  # the caller keeps training its model: the Denoiser must not change
        for p in model.parameters():
            p.mul_(0.0)
    np.testing.assert_array_equal(den.denoise(frame), before)


def test_swap_from_another_thread_while_denoising() -> None:
    model_a, model_b = _unet(seed=1), _unet(seed=2)
    frame = _frames((48, 48))
    out_a = Denoiser(model_a, NORM, device="cpu").denoise(frame)
    out_b = Denoiser(model_b, NORM, device="cpu").denoise(frame)
    assert not np.allclose(out_a, out_b)
    den = Denoiser((model_a, NORM), device="cpu")
    stop = threading.Event()
    swaps = {"n": 0}

    def swapper() -> None:
        use_b = True
        while not stop.is_set() and swaps["n"] < 30:
            den.swap((model_b if use_b else model_a, NORM))
            swaps["n"] += 1
            use_b = not use_b
            time.sleep(0.002)

    thread = threading.Thread(target=swapper)
    thread.start()
    seen = set()
    try:
        for _ in range(40):
            out = den.denoise(frame)
            if np.allclose(out, out_a, rtol=1e-5, atol=1e-3):
                seen.add("a")
            elif np.allclose(out, out_b, rtol=1e-5, atol=1e-3):
                seen.add("b")
            else:
                pytest.fail("a denoise call mixed two models")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert swaps["n"] > 0 and seen
    den.swap(model_b, NORM)
    np.testing.assert_allclose(den.denoise(frame), out_b, rtol=1e-5, atol=1e-3)


def test_saturated_pixels_are_passed_through() -> None:
    norm = NORM.copy(saturation=4095.0)
    den = Denoiser(_unet(), norm, device="cpu")
    frame = _frames((32, 32))
    frame[10:12, 10:12] = 4095.0
    out = den.denoise(frame)
    assert (out[10:12, 10:12] == 4095.0).all()
    assert not np.allclose(out[0:5, 0:5], frame[0:5, 0:5])


def test_frames_below_the_noise_models_dark_level_are_warned_about_once(caplog) -> None:
    """The Python API runs a stored noise model as it is: data already offset-subtracted (a second audit's
    ``frame - 10000``) came back flat without a word. The first frame a model sees is checked (not every frame)."""
    def warnings() -> list[str]:  # earlier tests may have left the logger at INFO: the Denoiser's own lines
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    assert NORM.share_below_dark_level(_frames((64, 64))) < 0.05
    assert NORM.share_below_dark_level(_frames((64, 64)) - 10000.0) == 1.0
    with caplog.at_level(logging.WARNING, logger="livedenoise"):
        den = Denoiser(_unet(), NORM, device="cpu")
        den.denoise(_frames((64, 64)))  # the camera's own levels: nothing to say
        den.denoise_stack(_frames((3, 64, 64)))
        assert not warnings()
        shifted = Denoiser(_unet(), NORM, device="cpu")
        shifted.denoise(_frames((64, 64)) - 10000.0)
        shifted.denoise(_frames((64, 64)) - 10000.0)  # said once, not per frame
    said = warnings()
    assert len(said) == 1 and said[0].startswith("100 % of the frame's pixels are below the noise model's dark level "
                                                 "(offset 100 ADU)") and "fit_noise_model" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="livedenoise"):
        Denoiser(_unet(), NORM, device="cpu").denoise_stack(_frames((2, 64, 64)) - 10000.0)
    assert len(warnings()) == 1  # a stack's first frame is checked too


def test_a_cpu_with_bf16_matrix_units_is_told_once_that_bf16_pays(monkeypatch, caplog) -> None:
    """On a CPU with Intel AMX an fp32 Denoiser logs one hint about --precision bf16 per process; bf16 itself, or a
    CPU without AMX, gets none. (bf16 is not the default there: its outputs differ from fp32's by more than 1e-3.)"""
    import livedenoise.device as device

    hinted = lambda: [r for r in caplog.records if r.getMessage() == device.BF16_HINT]  # noqa: E731
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    device.hint_bf16.cache_clear()
    with caplog.at_level(logging.INFO, logger="livedenoise"):
        Denoiser(_unet(), NORM, device="cpu")
        assert hinted() == []
        device.hint_bf16.cache_clear()
        monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
        Denoiser(_unet(), NORM, device="cpu", precision="bf16")
        assert hinted() == []
        Denoiser(_unet(), NORM, device="cpu")
        Denoiser(_unet(), NORM, device="cpu")
        assert len(hinted()) == 1
    device.hint_bf16.cache_clear()


def test_cpu_flags_are_read_from_linux_or_left_empty() -> None:
    from livedenoise.device import cpu_flags

    flags = cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").is_file() and "flags" in Path("/proc/cpuinfo").read_text():
        assert "fpu" in flags  # every x86 CPU reports it


def test_bf16_on_cpu_is_close_to_fp32() -> None:
    frame = _frames((32, 32))
    fp32 = Denoiser(_unet(), NORM, device="cpu", precision="fp32").denoise(frame)
    bf16_den = Denoiser(_unet(), NORM, device="cpu", precision="bf16")
    assert bf16_den.precision == "bf16"
    bf16 = bf16_den.denoise(frame)
    assert np.abs(bf16 - fp32).max() < 0.05 * (fp32.max() - fp32.min())
    assert Denoiser(_unet(), NORM, device="cpu").precision == "fp32"  # auto on CPU


def test_bf16_on_cpu_runs_bf16_weights_but_the_first_convolution_and_the_residual_sum_stay_fp32() -> None:
    """The fast path really runs (bf16 weights, not fp32 under autocast), and it keeps the precision-critical parts."""
    given = _unet()
    den = Denoiser(given, NORM, device="cpu", precision="bfloat16")
    net = den.model
    assert net.encoders[0][0].weight.dtype == torch.float32  # reads the frame itself
    assert net.encoders[0][3].weight.dtype == torch.bfloat16  # the first block's second convolution does not
    assert net.encoders[1][0].weight.dtype == torch.bfloat16 and net.head.weight.dtype == torch.bfloat16
    seen: dict[str, torch.Tensor] = {}
    net.encoders[0][0].register_forward_hook(lambda m, i, o: seen.update(first_in=i[0], first_out=o))
    net.encoders[0][3].register_forward_hook(lambda m, i, o: seen.update(second_in=i[0]))
    net.head.register_forward_hook(lambda m, i, o: seen.update(head_in=i[0], head_out=o))
    x = torch.randn(1, 1, 16, 16) * 30 + 100  # large values: a bf16 residual sum would round them to ~0.4 %
    with torch.inference_mode():
        y = net(x)
    assert seen["first_in"].dtype == torch.float32 and seen["first_out"].dtype == torch.float32
    assert seen["second_in"].dtype == torch.bfloat16
    assert seen["head_in"].dtype == torch.bfloat16 and y.dtype == torch.float32
    torch.testing.assert_close(y, x + seen["head_out"].float(), rtol=0, atol=1e-5)  # the sum is fp32
    # the caller's model is untouched (the Denoiser casts its own copy) ...
    assert given.head.weight.dtype == torch.float32
    # ... and a model taken from a bf16 Denoiser runs in fp32 again where fp32 is asked for
    again = Denoiser((net, NORM), device="cpu", precision="fp32")
    assert again.model.head.weight.dtype == torch.float32 and again.precision == "fp32"
    frame = _frames((32, 32))
    np.testing.assert_allclose(again.denoise(frame), Denoiser(given, NORM, device="cpu").denoise(frame),
                               atol=0.05 * float(np.ptp(frame)))


def test_bf16_with_the_shipped_backbones_costs_little_quality() -> None:
    """bf16 against fp32 on a simulated 5-photon frame, scored against the sample (the README's precision table
    measures this on every dev set: about -0.01 dB mean)."""
    from livedenoise.evaluate import SimulatedTask, with_normalizer
    from livedenoise.metrics import score
    from livedenoise.modelspec import load_model_spec

    task = SimulatedTask("filaments", 128)
    noisy, _ = task.test_set(5.0, 0, 1)
    truth = task.test_truth_flat(5.0, 0, 1)[0]
    ckpt = with_normalizer(load_model_spec("fast", device="cpu"), [noisy[0]])
    fp32 = Denoiser(ckpt, device="cpu", precision="fp32").denoise(noisy[0])
    bf16 = Denoiser(ckpt, device="cpu", precision="bf16").denoise(noisy[0])
    span = fp32.max() - fp32.min()
    assert 0 < np.sqrt(np.mean((bf16 - fp32) ** 2)) < 0.01 * span  # different arithmetic, same image
    assert score(truth, bf16).psnr > score(truth, fp32).psnr - 0.15
    assert score(truth, bf16).psnr > score(truth, noisy[0]).psnr + 5
    # the temporal backbone: its 2-D stage in bf16, the fusion in fp32
    stack = task.test_set(5.0, 1, 6)[0]
    tckpt = with_normalizer(load_model_spec("temporal", device="cpu"), list(stack))
    t32 = Denoiser(tckpt, device="cpu", precision="fp32").denoise_stack(np.stack(stack))
    den16 = Denoiser(tckpt, device="cpu", precision="bf16")
    t16 = den16.denoise_stack(np.stack(stack))
    assert next(den16.model.fusion.parameters()).dtype == torch.float32
    assert np.sqrt(np.mean((t16 - t32) ** 2)) < 0.01 * (t32.max() - t32.min())


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full((8, 8), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((2, 8, 8), dtype=np.float32), "2-D"),
        (np.array([["x"] * 4] * 4), "not numeric"),
    ],
)
def test_invalid_frames(bad: np.ndarray, match: str) -> None:
    den = Denoiser(_unet(), NORM, device="cpu")
    with pytest.raises(InputDataError, match=match):
        den.denoise(bad)
    with pytest.raises(InputDataError):
        den.push(bad)


def test_invalid_settings() -> None:
    with pytest.raises(ConfigError, match="Normalizer"):
        Denoiser(_unet(), device="cpu")
    with pytest.raises(ConfigError, match="Precision"):
        Denoiser(_unet(), NORM, device="cpu", precision="int8")
    with pytest.raises(ConfigError):
        Denoiser(b"not a model", NORM, device="cpu")
    with pytest.raises(ConfigError, match="batch_size"):
        Denoiser(_unet(), NORM, device="cpu", batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_select_device_refuses_missing_cuda() -> None:
    with pytest.raises(LivedenoiseError, match="CUDA"):
        select_device("cuda")
    with pytest.raises(LivedenoiseError):
        Denoiser(_unet(), NORM, device="cuda:0")


def test_select_device_choices(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="livedenoise"):
        assert select_device("cpu") == torch.device("cpu")
        auto = select_device("auto")
    assert auto.type in {"cpu", "cuda", "mps"}
    assert "Using device" in caplog.text
    with pytest.raises(ConfigError, match="tpu"):
        select_device("tpu")


def test_self_ensemble_averages_flips_and_rotations_and_is_exact_for_an_equivariant_model():
    """A model that commutes with flips/rotations gives the same output with and without the ensemble;
    one that does not is averaged over the 8 variants (checked against a hand-made average)."""
    import torch
    from torch import nn

    from livedenoise.errors import ConfigError
    from livedenoise.inference import Denoiser
    from livedenoise.normalization import Normalizer

    class Blur(nn.Module):  # symmetric 3x3 box: equivariant
        def forward(self, x):
            return nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)

    class ShiftRight(nn.Module):  # not equivariant: its ensemble is the mean of shifts in 4 directions
        def forward(self, x):
            return torch.cat([x[..., :1], x[..., :-1]], dim=-1)

    frame = np.random.default_rng(0).random((24, 24)).astype(np.float32) * 50 + 10
    norm = Normalizer(vst=False)
    plain = Denoiser((Blur(), norm), device="cpu").denoise(frame)
    np.testing.assert_allclose(Denoiser((Blur(), norm), device="cpu", ensemble=8).denoise(frame), plain, atol=1e-4)
    out = Denoiser((ShiftRight(), norm), device="cpu", ensemble=4).denoise(frame)
    p = np.pad(frame, 1, mode="edge")
    expected = (p[1:-1, :-2] + p[1:-1, 2:] + p[:-2, 1:-1] + p[2:, 1:-1]) / 4
    np.testing.assert_allclose(out[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-4)
    with pytest.raises(ConfigError, match="ensemble 3 is invalid"):
        Denoiser((Blur(), norm), device="cpu", ensemble=3)


@pytest.mark.parametrize("name", ["fast", "temporal"])
def test_channels_last_layout_gives_the_nchw_reference_output(name: str) -> None:
    """The faster NHWC layout is only a memory layout: outputs equal the NCHW reference within 1e-3 of the range."""
    from livedenoise.checkpoint import load_backbone

    rng = np.random.default_rng(4)
    frames = (100 + 2 * rng.poisson(30 + 200 * rng.random((3, 96, 80)) ** 4)).astype(np.uint16)
    ckpt = load_backbone(name)
    nhwc = Denoiser(ckpt, device="cpu")
    nchw = Denoiser(ckpt, device="cpu", channels_last=False)
    assert nhwc.layout == "channels-last" and nchw.layout == "NCHW"
    span = float(frames.max() - frames.min())
    if name == "temporal":
        a = np.stack([nhwc.push(f) for f in frames])
        b = np.stack([nchw.push(f) for f in frames])
    else:
        a, b = nhwc.denoise_stack(frames), nchw.denoise_stack(frames)
    assert np.abs(a - b).max() <= 1e-3 * span
    assert not np.array_equal(a, frames.astype(np.float32))  # it denoised


def test_a_frame_of_one_value_comes_back_unchanged_and_the_others_are_denoised() -> None:
    """A blank (all-zero) or constant frame in a stack holds no noise: it is returned as it is, never as the glow a
    network makes of a noise-free input; the stack's other frames are denoised exactly as they would be alone."""
    frames = _frames((3, 32, 32)).astype(np.float32)
    frames[1] = 0.0
    frames[2] = 77.0
    den = Denoiser(_unet(), NORM, device="cpu")
    out = den.denoise_stack(frames)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(out[2], 77.0)
    np.testing.assert_allclose(out[0], den.denoise(frames[0]), rtol=1e-5, atol=1e-4)
    assert not np.array_equal(out[0], frames[0])  # a frame with noise is denoised
