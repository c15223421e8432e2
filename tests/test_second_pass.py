"""The temporal backbone's second pass: the raw frames averaged where they agree, then denoised once more."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from livedenoise.inference import Denoiser
from livedenoise.models import build_model
from livedenoise.models.temporal import Fused, TemporalUNet, temporal_from_frame_model
from livedenoise.normalization import Normalizer
from livedenoise.second_pass import MIN_FRAMES, averaged, frames_averaged, second_pass

NORM = Normalizer(offset=100.0, gain=2.0, noise_b=2.25, scale=10.0)


def _frames(shape: tuple[int, ...], seed: int = 0, photons: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (2.0 * rng.poisson(photons, shape) + rng.normal(0, 1.5 * 2.0, shape) + 100.0).astype(np.float32)


def _temporal(seed: int = 0, h: float = 0.5) -> TemporalUNet:
    """A small temporal net without registration; ``h`` large: neighbours of a noisy static scene agree."""
    torch.manual_seed(seed)
    model = temporal_from_frame_model(build_model("unet", widths=[4, 8]), window=5, align=False)
    with torch.no_grad():
        model.fusion.trust.copy_(torch.tensor([2.0, 1.0, 0.0, -1.0]))
        model.fusion.log_h.fill_(math.log(h))
    return model.eval()


def _direct(model: TemporalUNet, frames: np.ndarray, *, causal: bool) -> np.ndarray:
    """The second pass computed straight from its parts: what the Denoiser must reproduce."""
    with torch.no_grad():
        raw = torch.from_numpy(frames)
        d = model.frame(NORM.forward_torch(raw)[:, None])[:, 0]
        result = model.fusion.fuse_series(d, causal=causal, raw=NORM.electrons_torch(raw))
        return second_pass(result, NORM, lambda z: model.frame(z[:, None])[:, 0]).numpy()


@pytest.mark.parametrize("n", [4, 9])
def test_the_averaged_noise_model_stabilises_the_mean_of_n_frames(n: int) -> None:
    """The variance model divided by n: the mean of n frames gets unit noise again, from 1 to 300 photons."""
    photons = np.geomspace(1.0, 300.0, 12)
    rng = np.random.default_rng(1)
    shape = (n, 4000, photons.size)
    frames = 2.0 * rng.poisson(np.broadcast_to(photons, shape)) + rng.normal(0, 3.0, shape) + 100.0
    mean = frames.mean(axis=0)
    stds = averaged(NORM, n).to_stabilised(mean).std(axis=0)
    assert np.all(np.abs(stds - 1.0) < 0.08), stds
    single = NORM.to_stabilised(mean).std(axis=0)  # the single-frame model sees 1/sqrt(n) of its noise
    np.testing.assert_allclose(single, 1 / math.sqrt(n), rtol=0.12)


def test_the_averaged_noise_model_keeps_offset_gain_and_maps_and_refuses_nonsense() -> None:
    maps = NORM.copy(pixel_offset=np.full((4, 4), 99.0), pixel_gain=np.full((4, 4), 2.1), shift=3.0)
    four = averaged(maps, 4.0)
    assert (four.noise_a, four.noise_b, four.shift) == (NORM.noise_a / 4, NORM.noise_b / 4, 6.0)
    assert four.offset == NORM.offset and four.gain == NORM.gain and four.pixel_gain is maps.pixel_gain
    assert averaged(NORM, 1.0) == NORM
    for bad in (0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="at least 1"):
            averaged(NORM, bad)


def test_frames_averaged_is_the_median_and_at_least_one() -> None:
    assert frames_averaged(torch.tensor([[1.0, 3.0, 4.0], [5.0, 5.0, 6.0], [2.0, 7.0, 8.0]])) == 5.0
    assert frames_averaged(torch.full((8, 8), 0.3)) == 1.0


def test_where_no_neighbour_agrees_the_second_pass_is_the_fusion() -> None:
    """Neighbours that never agree (h tiny): each pixel's average holds its own frame alone, nothing is redone."""
    model = _temporal(h=1e-4)
    stack = _frames((6, 24, 20))
    with torch.no_grad():
        raw = torch.from_numpy(stack)
        d = model.frame(NORM.forward_torch(raw)[:, None])[:, 0]
        result = model.fusion.fuse_series(d, causal=False, raw=NORM.electrons_torch(raw))
    assert float(result.frames.max()) < MIN_FRAMES
    calls = []
    out = second_pass(result, NORM, lambda z: calls.append(z) or z)
    assert not calls
    np.testing.assert_allclose(out.numpy(), NORM.inverse_torch(result.fused).numpy(), rtol=1e-6)
    with_pass = Denoiser(model, NORM, device="cpu").denoise_stack(stack)
    without = Denoiser(model, NORM, device="cpu", second_pass=False).denoise_stack(stack)
    np.testing.assert_allclose(with_pass, without, rtol=1e-5, atol=1e-3)


def test_a_stack_s_second_pass_equals_the_direct_computation_across_chunks() -> None:
    """Batch: 20 frames in chunks of 8, each with its 4 neighbours per side; one extra 2-D pass per frame."""
    model = _temporal(1)
    den = Denoiser(model, NORM, device="cpu", batch_size=1)
    seen: list[int] = []
    den.model.frame.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    stack = _frames((20, 24, 24), seed=2)
    out = den.denoise_stack(stack)
    np.testing.assert_allclose(out, _direct(model, stack, causal=False), rtol=1e-4, atol=1e-2)
    assert sum(seen) == 40  # 20 frames, then 20 averages
    without = Denoiser(model, NORM, device="cpu", second_pass=False).denoise_stack(stack)
    assert float(np.abs(out - without).mean()) > 0.5  # it did change the result


def test_live_push_runs_the_second_pass_on_the_causal_window_and_shares_it_between_streams() -> None:
    model = _temporal(2)
    den = Denoiser(model, NORM, device="cpu")
    seen: list[int] = []
    den.model.frame.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    frames = _frames((7, 24, 20), seed=3)
    want = _direct(model, frames, causal=True)  # every frame with the 4 before it
    for t in range(7):
        np.testing.assert_allclose(den.push(frames[t], stream="display"), want[t], rtol=1e-4, atol=1e-2,
                                   err_msg=f"frame {t}")
    first_frame_alone = 1  # frame 0 has no neighbour: nothing averaged, no second pass
    assert sum(seen) == 7 + 7 - first_frame_alone
    # the recorder, a stream whose windows hold the same frames, reuses the display's outputs: no pass at all
    for t in range(7):
        np.testing.assert_allclose(den.push(frames[t], stream="recorder"), want[t], rtol=1e-4, atol=1e-2)
    assert sum(seen) == 13 and den.shared_output_hits == 7 and den.shared_hits == 7
    # a stream that skipped frame 2: its first windows are the display's, the third one is new (one more pass)
    skipped = [den.push(frames[t], stream="skipping") for t in (0, 1, 3)]
    assert sum(seen) == 13 + 1 and den.shared_output_hits == 9
    np.testing.assert_allclose(skipped[2], _direct(model, frames[[0, 1, 3]], causal=True)[2], rtol=1e-4, atol=1e-2)
    den.reset()
    assert not den._outputs and not den._shared


@pytest.mark.parametrize("second", [True, False])
def test_a_push_with_the_following_frames_equals_the_batch_stack(second: bool) -> None:
    """A recorder that lags the camera gives each frame the frames acquired after it: every frame is then denoised
    with the centred window batch denoising uses (4 frames per side; fewer at both ends), to float rounding."""
    model = _temporal(7, h=0.5)
    stack = _frames((11, 24, 20), seed=8)
    want = Denoiser(model, NORM, device="cpu", second_pass=second).denoise_stack(stack)
    den = Denoiser(model, NORM, device="cpu", second_pass=second)
    seen: list[int] = []
    den.model.frame.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    got = np.stack([den.push(stack[t], stream="recorder", following=stack[t + 1:t + 5]) for t in range(11)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)
    causal = _direct(model, stack, causal=True) if second else None
    if causal is not None:  # it is not the causal result: the frames after each one changed it
        assert float(np.abs(got - causal)[:-1].mean()) > 0.05
    # each frame's 2-D pass ran once, though it was in the windows of the 4 frames before it too
    assert sum(seen) == 11 + (11 if second else 0)
    # the display's causal output of frame 4 (frames 0-4) is not mistaken for frame 0's centred one (frames 0-4)
    display = Denoiser(model, NORM, device="cpu", second_pass=second)
    for f in stack[:5]:
        display.push(f, stream="display")
    first = display.push(stack[0], stream="recorder", following=stack[1:5])
    np.testing.assert_allclose(first, want[0], rtol=1e-4, atol=1e-2)


def test_following_frames_are_denoised_once_per_field_however_many_fields_interleave(monkeypatch) -> None:
    """An acquisition of 6 fields, one time point of each after the other (an MDA): each field's later frames are in
    the windows of its earlier ones, and their 2-D pass runs once even when the content-shared results (here 2
    frames) have long moved on to other fields."""
    import livedenoise.inference as inference

    monkeypatch.setattr(inference, "SHARED_RESULTS_MAX", 2)
    model = _temporal(9, h=0.5)
    fields = [_frames((6, 16, 16), seed=20 + f) for f in range(6)]
    den = Denoiser(model, NORM, device="cpu", second_pass=False)
    seen: list[int] = []
    den.model.frame.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    got = {f: [] for f in range(6)}
    for t in range(6):
        for f in range(6):
            got[f].append(den.push(fields[f][t], stream=f"field {f}", following=fields[f][t + 1:t + 5]))
    assert sum(seen) == 36  # one 2-D pass per frame
    for f in range(6):
        want = Denoiser(model, NORM, device="cpu", second_pass=False).denoise_stack(fields[f])
        np.testing.assert_allclose(np.stack(got[f]), want, rtol=1e-4, atol=1e-2)
    den.drop_stream("field 0")
    den.reset()
    assert not den._streams


def test_following_frames_stop_at_a_new_frame_shape() -> None:
    """A frame of another shape (a new ROI or binning) ends the series: the frames after it are not used."""
    model = _temporal(8, h=0.5)
    stack = _frames((4, 24, 20), seed=10)
    other = _frames((1, 16, 16), seed=11)[0]
    den = Denoiser(model, NORM, device="cpu")
    cut = den.push(stack[0], stream="a", following=[stack[1], other, stack[2], stack[3]])
    np.testing.assert_allclose(cut, den.push(stack[0], stream="b", following=[stack[1]]), rtol=1e-6, atol=1e-4)
    assert float(np.abs(cut - den.push(stack[0], stream="c", following=list(stack[1:]))).mean()) > 0.01


def test_a_cnnt_push_with_the_following_frames_equals_the_batch_stack() -> None:
    """Temporal networks that take raw windows (CNNT) get the window denoise_stack gives each frame."""
    torch.manual_seed(0)
    model = build_model("cnnt", channels=4, cells_per_level=1, heads=1).eval()
    stack = _frames((8, 16, 16), seed=9)
    want = Denoiser(model, NORM, device="cpu", window=5).denoise_stack(stack)
    den = Denoiser(model, NORM, device="cpu", window=5)
    got = np.stack([den.push(stack[t], following=stack[t + 1:t + 5]) for t in range(8)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_a_static_scene_is_denoised_better_with_the_second_pass() -> None:
    """Ground truth: 9 frames of one noisy static scene at 3 photons. The second pass averages them before
    denoising, so it must land far closer to the scene than fusing the 2-D results alone."""
    model = _temporal(3)
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:32, 0:32]
    photons = 3.0 * (1 + np.sin(xx / 3.0) * np.cos(yy / 4.0))
    truth = (2.0 * photons + 100.0).astype(np.float32)
    stack = (2.0 * rng.poisson(np.broadcast_to(photons, (9, 32, 32))) + rng.normal(0, 3.0, (9, 32, 32))
             + 100.0).astype(np.float32)
    mse = {p: float(np.mean((Denoiser(model, NORM, device="cpu", second_pass=p).denoise_stack(stack)[4] - truth) ** 2))
           for p in (False, True)}
    assert mse[True] < 0.6 * mse[False], mse


def test_saturated_pixels_keep_their_raw_values_with_the_second_pass() -> None:
    norm = NORM.copy(saturation=4000.0)
    model = _temporal(4)
    stack = _frames((5, 24, 20), seed=5)
    stack[:, 3:6, 4:9] = 4095.0
    den = Denoiser(model, norm, device="cpu")
    for out in (den.denoise_stack(stack), np.stack([den.push(f) for f in stack])):
        np.testing.assert_array_equal(out[:, 3:6, 4:9], 4095.0)
        assert np.all(out[:, 10:, 10:] < 1000)


def test_the_fusion_result_carries_the_average_only_when_asked() -> None:
    model = _temporal(5)
    d = torch.zeros(1, 3, 8, 8)
    assert model.fusion.fuse(d, 2).average is None
    raw = torch.arange(3.0).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    result = model.fusion.fuse(d, 2, raw=raw)  # identical 2-D results: every neighbour agrees fully
    assert isinstance(result, Fused)
    torch.testing.assert_close(result.average, torch.ones(1, 8, 8))  # (0 + 1 + 2) / 3
    torch.testing.assert_close(result.frames, torch.full((1, 8, 8), 3.0))


def test_a_push_can_skip_the_second_pass_for_one_frame() -> None:
    """A display that fell behind asks for the fusion alone for one frame; it is not kept for other streams."""
    model = _temporal(6)
    den = Denoiser(model, NORM, device="cpu")
    frames = _frames((4, 24, 20), seed=7)
    for f in frames[:3]:
        den.push(f, stream="display")
    quick = den.push(frames[3], stream="display", second_pass=False)
    fusion_only = Denoiser(model, NORM, device="cpu", second_pass=False)
    for f in frames[:3]:
        fusion_only.push(f)
    np.testing.assert_allclose(quick, fusion_only.push(frames[3]), rtol=1e-5, atol=1e-3)
    recorded = [den.push(f, stream="recorder") for f in frames]
    np.testing.assert_allclose(recorded[3], _direct(model, frames, causal=True)[3], rtol=1e-4, atol=1e-2)
    assert den.shared_output_hits == 3  # frames 0-2 from the display; frame 3 had no second pass to share


def test_the_display_worker_says_when_it_has_fallen_behind() -> None:
    """A display that skipped frames is behind the camera: it then skips the second pass for its next frame."""
    import threading

    from livedenoise.acquisition.display import DenoiseWorker, behind

    started, go = threading.Event(), threading.Event()
    shown: list[tuple[int, int, bool]] = []

    def denoise(frame: np.ndarray, info: dict) -> np.ndarray:
        shown.append((int(frame[0, 0]), info["skipped_before"], behind(info)))
        started.set()
        go.wait(5)
        return frame

    worker = DenoiseWorker(denoise).start()
    worker.submit(np.full((2, 2), 0))
    assert started.wait(5)  # frame 0 is being denoised: the next ones queue up and replace each other
    for i in range(1, 8):
        worker.submit(np.full((2, 2), i))
    go.set()
    assert worker.drain(5)
    worker.submit(np.full((2, 2), 8))
    assert worker.drain(5)
    worker.stop()
    assert shown == [(0, 0, False), (7, 6, True), (8, 0, False)]
    assert worker.stats.dropped == 6


def test_drifting_frames_through_a_camera_with_a_fixed_pattern_are_averaged_in_electrons() -> None:
    """Registration moves a neighbour onto other sensor pixels: the per-pixel offset and gain must come out before
    averaging. A noise-free drifting scene through a 2-D stage that passes its input through unchanged must then
    come back exactly as a camera without the fixed pattern records it (the normaliser's scalar offset and gain:
    outputs never get the pattern back)."""
    rng = np.random.default_rng(8)
    h, w = 40, 44
    offset_map = (100.0 + rng.normal(0, 8.0, (h, w))).astype(np.float32)
    gain_map = (2.0 * (1 + rng.normal(0, 0.1, (h, w)))).astype(np.float32)
    norm = NORM.copy(pixel_offset=offset_map, pixel_gain=gain_map)
    torch.manual_seed(0)
    model = temporal_from_frame_model(build_model("unet", widths=[4, 8]), window=5, align=True)
    with torch.no_grad():
        for p in model.frame.parameters():
            p.zero_()  # residual U-Net with zero weights: output = input
        model.fusion.log_h.fill_(math.log(0.5))
    yy, xx = np.mgrid[0:h + 8, 0:w + 8]
    scene = 50.0 + 400.0 * np.exp(-((yy - 24) ** 2 + (xx - 26) ** 2) / 40.0) + 150.0 * (np.sin(xx / 2.0) > 0.6)
    stack = np.stack([scene[4:4 + h, 4 - t:4 - t + w] * gain_map + offset_map for t in range(3)]).astype(np.float32)
    out = Denoiser(model, norm, device="cpu").denoise_stack(stack)
    inner = (slice(None), slice(6, -6), slice(8, -8))
    flat = np.stack([scene[4:4 + h, 4 - t:4 - t + w] * norm.gain + norm.offset for t in range(3)]).astype(np.float32)
    np.testing.assert_allclose(out[inner], flat[inner], rtol=1e-3, atol=0.5)
    assert np.abs(out[inner] - stack[inner]).max() > 10  # the pattern (offsets spread by 8 ADU) is not put back


def test_a_display_held_back_by_its_frame_rate_cap_is_not_behind() -> None:
    """Frames replaced while the worker waits out max_fps were not skipped for lack of time."""
    import threading
    import time

    from livedenoise.acquisition.display import DenoiseWorker

    seen: list[int] = []
    first = threading.Event()

    def denoise(frame: np.ndarray, info: dict) -> np.ndarray:
        seen.append(info["skipped_before"])
        first.set()
        return frame

    worker = DenoiseWorker(denoise, max_fps=5).start()  # at most one frame per 0.2 s
    worker.submit(np.zeros((2, 2)))
    assert first.wait(5)
    time.sleep(0.02)  # the first frame is done: the worker now waits out the cap
    for i in range(5):
        worker.submit(np.full((2, 2), i + 1))
    assert worker.drain(5)
    worker.stop()
    assert seen == [0, 0] and worker.stats.dropped == 4


def test_frames_replaced_during_a_slow_frame_count_as_behind_only_past_the_rate_cap() -> None:
    """With max_fps, frames replaced while a frame is being denoised would have waited for the cap anyway: only those
    replaced after the next frame could have started count as skipped for lack of time (the adaptive display's
    signal to go to one pass, :mod:`livedenoise.acquisition.pass_choice`)."""
    import threading
    import time

    from livedenoise.acquisition.display import DenoiseWorker

    seen: list[int] = []
    started, release = threading.Event(), threading.Event()

    def denoise(frame: np.ndarray, info: dict) -> np.ndarray:
        seen.append(info["skipped_before"])
        started.set()
        release.wait(10)  # the first frame is slow: it takes as long as the test says
        return frame

    worker = DenoiseWorker(denoise, max_fps=1).start()  # the next frame may start 1 s after this one started
    worker.submit(np.zeros((2, 2)))
    assert started.wait(5)
    for i in range(3):  # within the cap's second: replaced, but not lost to the slow frame
        worker.submit(np.full((2, 2), i + 1))
    assert worker.stats.skipped_busy == 0 and worker.stats.dropped == 2
    time.sleep(1.2)  # past the cap, the frame still being denoised: now the display is behind
    worker.submit(np.full((2, 2), 9))
    assert worker.stats.skipped_busy == 1 and worker.stats.dropped == 3
    release.set()
    assert worker.drain(10)
    worker.stop()
    assert seen == [0, 1]


def test_a_fine_tuned_model_s_second_pass_runs_the_2d_stage_the_backbone_had() -> None:
    """After a fine-tune (``keep_averages_stage``, then ``frame`` changed) the first pass runs the adapted stage and
    the second pass the kept one, inverted as the backbone's outputs were; in batch and live alike."""
    model = _temporal(4)
    model.keep_averages_stage("algebraic")
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.frame.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the "fine-tuned" 2-D stage
    norm = NORM.copy(inversion="unbiased")  # the inverse of a self-supervised fine-tune of an earlier release
    stack = _frames((9, 24, 20), seed=5)

    def direct(causal: bool, averages: torch.nn.Module, inversion: str | None) -> np.ndarray:
        with torch.no_grad():
            raw = torch.from_numpy(stack)
            d = model.frame(norm.forward_torch(raw)[:, None])[:, 0]
            result = model.fusion.fuse_series(d, causal=causal, raw=norm.electrons_torch(raw))
            return second_pass(result, norm, lambda z: averages(z[:, None])[:, 0], inversion).numpy()

    assert model.averages is not None
    den = Denoiser(model, norm, device="cpu")
    batch = den.denoise_stack(stack)
    np.testing.assert_allclose(batch, direct(False, model.averages, "algebraic"), rtol=1e-4, atol=1e-2)
    assert float(np.abs(batch - direct(False, model.frame, None)).mean()) > 0.05  # not the adapted stage
    live = np.stack([den.push(f) for f in stack])
    np.testing.assert_allclose(live, direct(True, model.averages, "algebraic"), rtol=1e-4, atol=1e-2)
    # the unbiased inverse (of a blind-spot net's expected noisy value) would have raised the second pass's outputs
    assert float((direct(False, model.averages, None) - direct(False, model.averages, "algebraic")).mean()) > 0.05
