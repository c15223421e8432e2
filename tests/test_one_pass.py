"""A live temporal frame in one 2-D pass: the new raw frame averaged with the frames before it where their outputs
agree with it, then denoised once (``Denoiser.push(..., one_pass=True)``, :mod:`livedenoise.one_pass`)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from livedenoise.checkpoint import load_backbone
from livedenoise.errors import ConfigError
from livedenoise.inference import Denoiser
from livedenoise.models import build_model
from livedenoise.models.temporal import TemporalUNet, temporal_from_frame_model
from livedenoise.noise_model import fit_noise_model
from livedenoise.normalization import Normalizer
from livedenoise.one_pass import Neighbour, neighbour_from_result, one_pass

NORM = Normalizer(offset=100.0, gain=2.0, noise_b=2.25, scale=10.0)


def _frames(shape: tuple[int, ...], seed: int = 0, photons: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (2.0 * rng.poisson(photons, shape) + rng.normal(0, 3.0, shape) + 100.0).astype(np.float32)


def _temporal(seed: int = 0, align: bool = False) -> TemporalUNet:
    """A small temporal net whose 2-D stage is close to the identity (its head scaled down): its outputs of a noisy
    scene are about as noisy as the frames, so neighbours partly agree and the average is denoised."""
    torch.manual_seed(seed)
    model = temporal_from_frame_model(build_model("unet", widths=[4, 8]), window=5, align=align)
    with torch.no_grad():
        model.fusion.trust.copy_(torch.tensor([2.0, 1.0, 0.0, -1.0]))
        model.frame.head.weight.mul_(0.1)
        model.frame.head.bias.zero_()
    return model.eval()


def _direct(model: TemporalUNet, frames: np.ndarray, norm: Normalizer = NORM) -> np.ndarray:
    """Each frame through :func:`one_pass` with the outputs kept for the ones after it: what push must give."""
    averages = model.averages if model.averages is not None else model.frame
    past: list[Neighbour] = []
    outs = []
    with torch.no_grad():
        for f in frames:
            out, kept = one_pass(torch.from_numpy(f), past, norm, model.fusion,
                                 lambda z: model.frame(z[:, None])[:, 0], lambda z: averages(z[:, None])[:, 0],
                                 model.averages_inversion)
            past = [*past, kept][-model.fusion.lags:]
            outs.append(out.numpy())
    return np.stack(outs)


def _imaged(rates: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames of the photon ``rates`` (gain 2, offset 100, read noise 1.5 e-) and their truths, in ADU."""
    rng = np.random.default_rng(seed)
    frames = [2.0 * rng.poisson(r) + rng.normal(0, 3.0, r.shape) + 100.0 for r in rates]
    return np.stack(frames).astype(np.float32), np.stack([2.0 * r + 100.0 for r in rates]).astype(np.float32)


def _sinusoid_scene(photons: float, n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy frames of one static scene and its truth in ADU."""
    yy, xx = np.mgrid[0:size, 0:size]
    frames, truths = _imaged([photons * (0.1 + (np.sin(xx / 3.0) * np.cos(yy / 5.0)) ** 2)] * n, seed)
    return frames, truths[0]


def _last_in_one_pass_and_alone(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shipped temporal backbone's last frame pushed in one pass after the others, and denoised alone (the first
    frame of a stream: the 2-D network)."""
    ckpt = _shipped_temporal(frames)
    den = Denoiser(ckpt, device="cpu")
    return [den.push(f, one_pass=True) for f in frames][-1], Denoiser(ckpt, device="cpu").push(frames[-1])


@pytest.mark.parametrize("fine_tuned", [False, True])
def test_push_in_one_pass_is_the_direct_computation_with_a_window_of_the_fusion_s_lags(fine_tuned: bool) -> None:
    """The Denoiser keeps the stream's last ``lags`` outputs and runs the average through the backbone's 2-D stage
    where a fine-tune kept it (``averages``, inverted as the backbone's outputs were), the single frames through the
    adapted one; the camera's per-pixel maps come out before averaging."""
    model = _temporal(1, align=True)
    rng = np.random.default_rng(9)
    norm = NORM.copy(pixel_offset=100.0 + rng.normal(0, 3.0, (24, 20)), pixel_gain=2.0 + rng.normal(0, 0.1, (24, 20)))
    if fine_tuned:
        norm = norm.copy(inversion="unbiased")  # the adapted stage's inverse; the kept stage's is "algebraic"
        model.keep_averages_stage("algebraic")
        torch.manual_seed(2)
        with torch.no_grad():
            for name, p in model.frame.named_parameters():
                if not name.startswith("head."):  # the "fine-tuned" 2-D stage, still close to the identity
                    p.add_(0.05 * torch.randn_like(p))
    frames = _frames((8, 24, 20), seed=3)
    den = Denoiser(model, norm, device="cpu")
    got = np.stack([den.push(f, one_pass=True) for f in frames])
    np.testing.assert_allclose(got, _direct(model, frames, norm), rtol=0, atol=1e-3)
    seen = []
    with torch.no_grad():  # the average path ran: every frame after the first averaged about 2 frames or more
        for t in range(1, 8):
            past = [Neighbour(norm.electrons_torch(torch.from_numpy(frames[k])),
                              NORM.expected_gat_torch(NORM.forward_torch(torch.from_numpy(got[k]))), None)
                    for k in range(max(0, t - 4), t)]
            one_pass(torch.from_numpy(frames[t]), past, norm, model.fusion, lambda z: seen.append("frame") or z,
                     lambda z: seen.append("average") or z)
    assert seen == ["average"] * 7, seen
    if fine_tuned:  # the averages went through the kept stage and its inverse, not the adapted ones
        kept, model.averages = model.averages, None
        assert float(np.abs(got[1:] - _direct(model, frames, norm)[1:]).mean()) > 0.01  # 10x the tolerance above
        model.averages, model.averages_inversion = kept, None
        assert float(np.abs(got[1:] - _direct(model, frames, norm)[1:]).mean()) > 0.01


def test_a_frame_with_nothing_to_average_is_the_2d_result_as_two_passes_give_it() -> None:
    """The first frame of a stream, the first after a new field of view and the first after a scene that changed
    everywhere: nothing agrees, so the 2-D network on the frame alone, as the two-pass push gives a first frame."""
    model = _temporal(3)
    frames = _frames((5, 24, 20), seed=4)
    den = Denoiser(model, NORM, device="cpu")

    def first(frame: np.ndarray) -> np.ndarray:
        return Denoiser(model, NORM, device="cpu").push(frame)

    np.testing.assert_allclose(den.push(frames[0], one_pass=True), first(frames[0]), rtol=1e-5, atol=1e-3)
    for f in frames[1:4]:
        den.push(f, one_pass=True)
    brighter = _frames((24, 20), seed=5, photons=300.0)  # ten times the light everywhere: no neighbour agrees
    np.testing.assert_allclose(den.push(brighter, one_pass=True), first(brighter), rtol=1e-5, atol=1e-3)
    smaller = _frames((16, 16), seed=6)  # a new ROI: the old frames no longer line up
    np.testing.assert_allclose(den.push(smaller, one_pass=True), first(smaller), rtol=1e-5, atol=1e-3)
    other = Denoiser(model, NORM, device="cpu")
    for f in frames[:4]:
        other.push(f, stream="a", one_pass=True)
    np.testing.assert_allclose(other.push(frames[4], stream="b", one_pass=True), first(frames[4]), rtol=1e-5,
                               atol=1e-3)  # each stream has its own window


def test_a_stream_that_changes_way_carries_its_window_over() -> None:
    """An adaptive display (``[live] one_pass = "auto"``) changes way mid-stream. From two passes to one, the frames
    the two passes denoised are what one pass averages (their raw electrons, their 2-D results as references), so the
    first frame in one pass is no 2-D frame; from one pass back to two, the two passes' window restarts at that
    frame (its 2-D results stopped where one pass began)."""
    model = _temporal(1)  # no registration: on frames of noise alone it would find shifts that are not there
    frames = _frames((9, 24, 20), seed=12)
    den = Denoiser(model, NORM, device="cpu")
    for f in frames[:5]:
        den.push(f, stream="display")
    got = den.push(frames[5], stream="display", one_pass=True)
    with torch.no_grad():
        past = [neighbour_from_result(model.frame(NORM.forward_torch(torch.from_numpy(f))[None, None])[0, 0],
                                      NORM.electrons_torch(torch.from_numpy(f)), NORM, model.fusion)
                for f in frames[1:5]]
        want, _ = one_pass(torch.from_numpy(frames[5]), past, NORM, model.fusion,
                           lambda z: model.frame(z[:, None])[:, 0], lambda z: model.frame(z[:, None])[:, 0])
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-3)
    alone = Denoiser(model, NORM, device="cpu").push(frames[5], one_pass=True)  # nothing before it: the 2-D result
    assert float(np.abs(got - alone).mean()) > 0.05  # 50x the tolerance above: the carried frames were averaged
    den.push(frames[6], stream="display", one_pass=True)
    kept = den._streams["display"]
    assert len(kept.past) == 4 and len(kept.frames) == 0  # one way's frames at a time
    back = [den.push(f, stream="display") for f in frames[7:9]]
    fresh = Denoiser(model, NORM, device="cpu")
    np.testing.assert_allclose(back, [fresh.push(f) for f in frames[7:9]], rtol=1e-5, atol=1e-3)
    assert len(kept.frames) == 2 and len(kept.past) == 0


@pytest.mark.parametrize("inversion", ["algebraic", "unbiased"])
def test_a_carried_frame_is_kept_as_one_pass_keeps_a_frame_it_denoised_alone(inversion: str) -> None:
    """What one pass keeps of a frame the two passes denoised (its 2-D result) is what it keeps of the same frame
    denoised alone in one pass, whichever way the model's outputs are inverted."""
    model = _temporal(2)
    norm = NORM.copy(inversion=inversion)
    frame = torch.from_numpy(_frames((24, 20), seed=13))

    def net(z: torch.Tensor) -> torch.Tensor:
        return model.frame(z[:, None])[:, 0]

    with torch.no_grad():
        _, kept = one_pass(frame, [], norm, model.fusion, net, net)
        units = net(norm.forward_torch(frame)[None])[0]
        carried = neighbour_from_result(units, norm.electrons_torch(frame), norm, model.fusion)
    torch.testing.assert_close(carried.expected, kept.expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(carried.electrons, kept.electrons)


def test_one_pass_refuses_following_frames_and_a_2d_model_or_no_stabilisation_ignore_it() -> None:
    """One pass is a causal window: with frames after the one denoised (a recorder's centred window) it is refused.
    A 2-D model and a normaliser without the transform (no noise standard deviation to test agreement in) are
    denoised as without ``one_pass``."""
    model = _temporal(4)
    frames = _frames((6, 24, 20), seed=7)
    with pytest.raises(ConfigError, match="causal window"):
        Denoiser(model, NORM, device="cpu").push(frames[0], one_pass=True, following=frames[1:3])
    linear = NORM.copy(vst=False)
    a, b = Denoiser(model, linear, device="cpu"), Denoiser(model, linear, device="cpu")
    for f in frames:
        np.testing.assert_allclose(a.push(f, one_pass=True), b.push(f), rtol=1e-5, atol=1e-3)
    flat = build_model("unet", widths=[4, 8]).eval()
    np.testing.assert_array_equal(Denoiser(flat, NORM, device="cpu").push(frames[0], one_pass=True),
                                  Denoiser(flat, NORM, device="cpu").denoise(frames[0]))


def _shipped_temporal(frames: np.ndarray):
    ckpt = load_backbone("temporal").clone()
    ckpt.normalizer = fit_noise_model(list(frames[:2]), like=ckpt.normalizer).normalizer
    return ckpt


def test_a_swapped_model_starts_a_fresh_one_pass_window() -> None:
    """After a swap (an adapted model) no output of the old model is averaged into the new one's frames."""
    frames = _frames((6, 24, 20), seed=11)
    den = Denoiser(_temporal(5), NORM, device="cpu")
    for f in frames[:5]:
        den.push(f, one_pass=True)
    other = _temporal(6)
    den.swap(other, NORM)
    np.testing.assert_allclose(den.push(frames[5], one_pass=True),
                               Denoiser(other, NORM, device="cpu").push(frames[5]), rtol=1e-5, atol=1e-3)


def test_a_static_scene_in_one_pass_lands_far_closer_to_the_truth_than_frame_by_frame() -> None:
    """The shipped temporal backbone on 8 frames of a static scene at 4 photons: the last frame averaged with the four
    before it has about five times the light; its error must be well below the 2-D network's on the frame alone,
    and no worse than the fusion of 2-D results."""
    stack, truth = _sinusoid_scene(4.0, 8, seed=1)
    ckpt = _shipped_temporal(stack)
    den = Denoiser(ckpt, device="cpu")
    outs = [den.push(f, one_pass=True) for f in stack]
    mse_one = float(np.mean((outs[-1] - truth) ** 2))
    mse_2d = float(np.mean((outs[0] - truth) ** 2))  # the first frame: the 2-D network alone
    single = float(np.mean((Denoiser(ckpt, device="cpu").push(stack[-1]) - truth) ** 2))
    fusion = Denoiser(ckpt, device="cpu", second_pass=False)
    mse_fusion = float(np.mean(([fusion.push(f) for f in stack][-1] - truth) ** 2))
    assert mse_one < 0.6 * single and mse_one < 0.6 * mse_2d, (mse_one, single, mse_2d)
    assert mse_one < mse_fusion, (mse_one, mse_fusion)


def test_a_moving_spot_is_neither_smeared_nor_left_behind_in_one_pass() -> None:
    """A bright spot that jumps 8 px a frame over a static scene: in one pass it stays where it is (its peak as
    bright as the 2-D network's on that frame) and leaves no ghost where it was a frame before."""
    yy, xx = np.mgrid[0:64, 0:64]
    base = 5.0 * (0.2 + (np.sin(xx / 4.0) * np.cos(yy / 6.0)) ** 2)
    centres = [(32, 12 + 8 * t) for t in range(6)]
    frames, truths = _imaged([base + 40.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
                              for cy, cx in centres], seed=2)
    out, alone = _last_in_one_pass_and_alone(frames)
    (cy, cx), (py, px) = centres[-1], centres[-2]
    here = (slice(cy - 2, cy + 3), slice(cx - 2, cx + 3))
    before = (slice(py - 2, py + 3), slice(px - 2, px + 3))
    amplitude = float(truths[-1][cy, cx] - truths[-2][cy, cx])  # the spot above the scene, in ADU
    assert float(out[here].max()) > 0.95 * float(alone[here].max()), (out[here].max(), alone[here].max())
    ghost = float(np.mean(out[before] - truths[-1][before]))  # the scene without the spot, there
    assert abs(ghost) < 0.03 * amplitude, (ghost, amplitude)


def test_a_drifting_scene_is_registered_before_it_is_averaged() -> None:
    """The scene moves 2 px a frame: registration moves each neighbour back onto the new frame, so one pass still
    averages (far closer to the truth than the 2-D network alone)."""
    yy, xx = np.mgrid[0:76, 0:76]
    field = 4.0 * (0.1 + (np.sin(xx / 3.0) * np.cos(yy / 5.0)) ** 2)
    frames, truths = _imaged([field[0:64, 2 * t:2 * t + 64] for t in range(6)], seed=3)
    out, alone = _last_in_one_pass_and_alone(frames)
    inner = (slice(8, -8), slice(8, -8))  # away from the edge the drift brings in
    mse_one = float(np.mean((out - truths[-1])[inner] ** 2))
    mse_2d = float(np.mean((alone - truths[-1])[inner] ** 2))
    assert mse_one < 0.7 * mse_2d, (mse_one, mse_2d)


def test_the_agreement_blur_is_a_normalised_gaussian() -> None:
    from livedenoise.one_pass import SIGMA, _blur

    x = torch.zeros(41, 41)
    x[20, 20] = 1.0
    y = _blur(x[None])[0]
    assert math.isclose(float(y.sum()), 1.0, rel_tol=1e-5)
    yy, _ = torch.meshgrid(torch.arange(41.0) - 20, torch.arange(41.0) - 20, indexing="ij")
    assert math.isclose(float((y * yy**2).sum()), SIGMA**2, rel_tol=0.05)
    torch.testing.assert_close(_blur(torch.full((1, 9, 7), 3.0)), torch.full((1, 9, 7), 3.0))
