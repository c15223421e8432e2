"""livedenoise attached to acquisitions the user runs: pycromanager hooks, the pymmcore-plus MDA handler, examples.

The acquisitions are the user's kind: 2 channels x 3 z x 2 positions x 2 time points on the simulated core,
through pycromanager's ``Acquisition`` and pymmcore-plus's ``core.mda.run``, unchanged.
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_live_session import identity_backbone  # the tiny identity U-Net: any gain after a swap is the fine-tune's

from livedenoise.attach import AttachedDenoiser, MDADenoiser, PycromanagerDenoiser, stream_key, useq_axes
from livedenoise.checkpoint import load_backbone
from livedenoise.errors import ConfigError, LivedenoiseError
from livedenoise.inference import Denoiser
from livedenoise.metrics import score
from livedenoise.noise_model import fit_noise_model

CHANNELS = ["5%", "20%"]
ROOT = Path(__file__).resolve().parents[1]


def _events(core, time_points: int = 2):
    from pycromanager import multi_d_acquisition_events

    from simulators.core import LIGHT_GROUP

    return multi_d_acquisition_events(num_time_points=time_points, channel_group=LIGHT_GROUP, channels=CHANNELS,
                                      z_start=0, z_end=2, z_step=1, xy_positions=[[0.0, 0.0], [8.0, 6.0]])


def _read_all(path) -> dict[tuple, np.ndarray]:
    from ndstorage import Dataset

    ds = Dataset(str(path))
    frames = {tuple(sorted(c.items())): np.asarray(ds.read_image(**c)) for c in ds.get_image_coordinates_list()}
    ds.close()
    return frames


def _capturing(hook, seen: dict):
    def process(image, metadata):
        seen[tuple(sorted(metadata["Axes"].items()))] = np.array(image, copy=True)
        return hook(image, metadata)

    return process


def _expected(frames: dict[tuple, np.ndarray], channel: str) -> Denoiser:
    """What the attached denoiser should use for ``channel``: fast, its normaliser fitted on the channel's first
    frame."""
    first = next(v for k, v in frames.items() if dict(k)["channel"] == channel and dict(k)["time"] == 0
                 and dict(k)["position"] == 0 and dict(k)["z"] == 0)
    ckpt = load_backbone("fast").clone()
    ckpt.normalizer = fit_noise_model([first], like=ckpt.normalizer).normalizer
    return Denoiser(ckpt, device="cpu")


def test_pycromanager_process_hook_saves_raw_unchanged_and_denoises_every_axis(simulated_core, tmp_path):
    from pycromanager import Acquisition

    events = _events(simulated_core)
    den = PycromanagerDenoiser("fast", output=tmp_path / "den", device="cpu")
    seen: dict[tuple, np.ndarray] = {}
    with Acquisition(directory=str(tmp_path / "raw"), name="exp", image_process_fn=_capturing(den.process, seen),
                     show_display=False) as acq:
        acq.acquire(events)
        raw_path = acq.get_dataset().path
    report = den.close(progress=False)

    assert len(seen) == len(events) == 24
    raw = _read_all(raw_path)
    assert raw.keys() == seen.keys() and all(np.array_equal(raw[k], seen[k]) for k in seen)  # raw as acquired
    assert report.frames_submitted == report.frames_written == 24 and not report.errors
    denoised = _read_all(report.denoised_path)
    assert denoised.keys() == raw.keys()
    assert sorted(report.channels) == sorted(CHANNELS)

    # Each channel has its own noise fit (on its first frame) and every recorded frame is that model's output.
    for channel in CHANNELS:
        expected = _expected(raw, channel)
        for key in [k for k in raw if dict(k)["channel"] == channel][:3]:
            want = np.clip(np.rint(expected.denoise(raw[key])), 0, 65535)
            assert np.abs(denoised[key].astype(np.float64) - want).max() <= 1.0, key

    # And denoising helps against the simulator's truth, on the dim channel by a wide margin.
    dim = [k for k in raw if dict(k)["channel"] == "5%"]
    truth = {k: simulated_core.microscope.lookup(raw[k]).truth for k in dim}
    raw_psnr = np.mean([score(truth[k], raw[k]).psnr for k in dim])
    den_psnr = np.mean([score(truth[k], denoised[k]).psnr for k in dim])
    assert den_psnr > raw_psnr + 3.0, (raw_psnr, den_psnr)


def test_pycromanager_saved_hook_denoises_from_what_was_saved(simulated_core, tmp_path):
    from pycromanager import Acquisition

    events = _events(simulated_core)
    den = PycromanagerDenoiser("fast", output=tmp_path / "den", device="cpu", max_queued=4)
    with Acquisition(directory=str(tmp_path / "raw"), name="exp", image_saved_fn=den.saved, show_display=False) as acq:
        acq.acquire(events)
        raw_path = acq.get_dataset().path
    report = den.close(progress=False)
    raw = _read_all(raw_path)
    denoised = _read_all(report.denoised_path)
    assert len(raw) == 24 and denoised.keys() == raw.keys() and not report.errors
    assert report.frames_reread == 24  # pixels came from the dataset on disk, not from memory
    assert report.display_denoised >= 1 and den.latest() is not None and den.latest().raw is not None
    expected = _expected(raw, "20%")
    key = next(k for k in raw if dict(k)["channel"] == "20%")
    assert np.abs(denoised[key].astype(np.float64) - np.clip(np.rint(expected.denoise(raw[key])), 0, 65535)).max() <= 1


def test_a_channel_can_be_left_raw_and_another_can_have_its_own_model(simulated_core, tmp_path):
    from pycromanager import Acquisition

    mine = load_backbone("fast").clone(name="my-adapted-model")
    path = mine.save(tmp_path / "mine.safetensors")
    den = PycromanagerDenoiser("fast", channels={"20%": None, "5%": path}, output=tmp_path / "den", device="cpu")
    with Acquisition(directory=str(tmp_path / "raw"), name="exp", image_process_fn=den.process,
                     show_display=False) as acq:
        acq.acquire(_events(simulated_core))
        raw_path = acq.get_dataset().path
    report = den.close(progress=False)
    assert len(_read_all(raw_path)) == 24  # the raw channel is saved as always
    denoised = _read_all(report.denoised_path)
    assert report.frames_skipped == 12 and len(denoised) == 12
    assert {dict(k)["channel"] for k in denoised} == {"5%"}
    assert list(report.channels) == ["5%"] and report.channels["5%"]["model"] == "my-adapted-model"


def test_mda_handler_denoises_every_frame_with_named_axes(simulated_core, tmp_path):
    import useq

    from simulators.core import LIGHT_GROUP

    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 2},
                                channels=[{"config": c, "group": LIGHT_GROUP} for c in CHANNELS],
                                z_plan={"range": 2, "step": 1}, stage_positions=[(0.0, 0.0, 0.0), (8.0, 6.0, 0.0)],
                                axis_order="tpcz")
    seen: dict[tuple, np.ndarray] = {}

    class Capture:
        def frameReady(self, image, event, meta=None):  # noqa: N802
            seen[tuple(sorted(useq_axes(event).items()))] = np.array(image, copy=True)

    handler = MDADenoiser("fast", output=tmp_path / "den", device="cpu")
    simulated_core.mda.run(sequence, output=[str(tmp_path / "raw.ome.zarr"), handler, Capture()])
    report = handler.result
    assert report is not None and report.frames_written == 24 and not report.errors
    denoised = _read_all(report.denoised_path)
    assert denoised.keys() == seen.keys() and len(seen) == 24
    assert {dict(k)["channel"] for k in denoised} == set(CHANNELS)  # channel names, not indices
    expected = _expected(seen, "5%")
    key = next(k for k in seen if dict(k)["channel"] == "5%")
    assert np.abs(denoised[key].astype(np.float64) - np.clip(np.rint(expected.denoise(seen[key])), 0, 65535)).max() <= 1
    assert (tmp_path / "raw.ome.zarr").is_dir()  # raw went to pymmcore-plus's own OME-Zarr writer


def _poisson_frames(n_fields: int, time_points: int, seed: int = 0) -> dict[tuple[int, int], np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    frames = {}
    for p in range(n_fields):
        clean = 20 + 200 * np.exp(-((yy - 20 - 20 * p) ** 2 + (xx - 30) ** 2) / 30.0)
        for t in range(time_points):
            frames[(p, t)] = (100 + 2 * rng.poisson(clean)).astype(np.uint16)
    return frames


def test_temporal_model_keeps_one_window_per_field(tmp_path):
    frames = _poisson_frames(2, 4)
    # causal: recorded as displayed, so that each frame's window is that of its field's stream alone
    den = AttachedDenoiser("temporal", output=tmp_path / "den", device="cpu", recorded_window="causal")
    for t in range(4):  # the acquisition interleaves the two positions
        for p in range(2):
            den.submit(frames[(p, t)], {"time": t, "position": p})
    report = den.close(progress=False)
    assert report.frames_written == 8 and not report.errors
    got = _read_all(report.denoised_path)

    ckpt = load_backbone("temporal").clone()
    ckpt.normalizer = fit_noise_model([frames[(0, 0)]], like=ckpt.normalizer).normalizer
    reference = Denoiser(ckpt, device="cpu")
    for t in range(4):  # position 1 alone, in time order: its window never saw position 0's frames
        want = np.clip(np.rint(reference.push(frames[(1, t)], stream="position 1")), 0, 65535)
        assert np.abs(got[(("position", 1), ("time", t))].astype(np.float64) - want).max() <= 1, t
    assert stream_key({"time": 3, "position": 1, "channel": "GFP"}) == "channel=GFP|position=1"


def test_one_pass_reaches_the_display_and_a_causal_recorder_but_never_a_centred_one(tmp_path):
    """``one_pass=True``: what is displayed and recorded with a causal window is each field's frames pushed in one
    pass; a centred recorded window stays batch denoising's, its last frames too (they have no following frames)."""
    frames = _poisson_frames(2, 5)
    ckpt = load_backbone("temporal").clone()
    ckpt.normalizer = fit_noise_model([frames[(0, 0)]], like=ckpt.normalizer).normalizer
    for window in ("causal", "centred"):
        shown: list = []
        den = AttachedDenoiser("temporal", output=tmp_path / window, device="cpu", recorded_window=window,
                               one_pass=True, display=shown.append)
        for t in range(5):
            for p in range(2):
                den.submit(frames[(p, t)], {"time": t, "position": p})
                assert den._worker.drain(30)  # every frame shown, so that each display window is complete
        report = den.close(progress=False)
        assert report.frames_written == 10 and not report.errors
        assert report.display_passes == {"mode": True, "one pass": 10, "two passes": 0, "switches": []}
        got = _read_all(report.denoised_path)
        for p in range(2):
            stack = np.stack([frames[(p, t)] for t in range(5)]).astype(np.float32)
            one = Denoiser(ckpt, device="cpu")
            in_one_pass = np.stack([one.push(f, one_pass=True) for f in stack])
            two = Denoiser(ckpt, device="cpu")
            assert np.abs(in_one_pass[4] - two.denoise_stack(stack)[4]).mean() > 0.05  # the two ways differ here
            want = in_one_pass if window == "causal" else Denoiser(ckpt, device="cpu").denoise_stack(stack)
            for t in range(5):
                recorded = got[(("position", p), ("time", t))].astype(np.float64)
                assert np.abs(recorded - np.clip(np.rint(want[t]), 0, 65535)).max() <= 1, (window, p, t)
                displayed = next(r.denoised for r in shown if r.info["axes"] == {"time": t, "position": p})
                np.testing.assert_allclose(displayed, in_one_pass[t], rtol=0, atol=1e-2)


def test_the_display_way_is_auto_by_default_two_passes_while_it_keeps_up_and_a_wrong_way_is_refused(tmp_path):
    """``one_pass="auto"`` (default): a display that keeps up (every frame shown before the next is handed over)
    stays in two passes, and the report says so; a way that is neither True, False nor "auto" is refused before any
    frame."""
    with pytest.raises(ConfigError, match="one_pass 'sometimes' is invalid; expected True, False or \"auto\""):
        AttachedDenoiser("temporal", device="cpu", one_pass="sometimes")  # type: ignore[arg-type]
    frames = _poisson_frames(1, 4)
    den = AttachedDenoiser("temporal", device="cpu")
    for t in range(4):
        den.submit(frames[(0, t)], {"time": t, "position": 0})
        assert den._worker.drain(30)
    report = den.close(progress=False)
    assert report.display_passes == {"mode": "auto", "one pass": 0, "two passes": 4, "switches": []}
    assert AttachedDenoiser("fast", device="cpu").close(progress=False).display_passes == {}  # no temporal model


def test_a_temporal_model_records_each_field_with_centred_windows_with_or_without_read_raw(tmp_path):
    """Each field's frames are recorded fused with the frames before and after them, exactly as batch denoising of
    that field's stack: with read_raw (as the pycromanager attachment gives once frames are saved) frames past
    max_queued are read back; without it (the MDA handler) they are parked on disk meanwhile. "causal" keeps the
    display's windows; a frame without a time axis is recorded at once."""
    frames = _poisson_frames(2, 6)
    reads = []

    def read_raw(axes):
        reads.append(axes)
        return frames[(axes["position"], axes["time"])]

    ckpt = load_backbone("temporal").clone()
    ckpt.normalizer = fit_noise_model([frames[(0, 0)]], like=ckpt.normalizer).normalizer
    got = {}
    for window, reader in (("centred", read_raw), ("causal", read_raw), ("centred without read_raw", None)):
        den = AttachedDenoiser("temporal", output=tmp_path / window, device="cpu", read_raw=reader, max_queued=3,
                               recorded_window=window.split()[0])
        for t in range(6):  # the acquisition interleaves the two positions
            for p in range(2):
                den.submit(frames[(p, t)], {"time": t, "position": p})
        if reader is None:  # the frames waiting for their later frames are parked (before close ends the parking)
            deadline = time.monotonic() + 60
            while den._writer.parked < 1 and den._writer.written < 12:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        report = den.close(progress=False)
        assert report.frames_written == 12 and not report.errors
        assert not list((tmp_path / window).glob(".livedenoise-spill-*"))
        assert (report.frames_parked > 0) == (reader is None) and (report.frames_reread > 0) == (reader is not None)
        assert ("parked on disk" in report.summary()) == (reader is None)
        got[window] = _read_all(report.denoised_path)
    assert reads  # the recorder read frames back past max_queued
    for p in range(2):
        stack = np.stack([frames[(p, t)] for t in range(6)]).astype(np.float32)
        centred = np.clip(np.rint(Denoiser(ckpt, device="cpu").denoise_stack(stack)), 0, 65535)
        causal_den = Denoiser(ckpt, device="cpu")
        causal = np.clip(np.rint(np.stack([causal_den.push(f) for f in stack])), 0, 65535)
        for t in range(6):
            key = (("position", p), ("time", t))
            assert np.abs(got["centred"][key].astype(np.float64) - centred[t]).max() <= 1, (p, t)
            assert np.abs(got["causal"][key].astype(np.float64) - causal[t]).max() <= 1, (p, t)
            assert np.abs(got["centred without read_raw"][key].astype(np.float64) - centred[t]).max() <= 1, (p, t)
        assert np.mean([np.abs(centred[t] - causal[t]).mean() for t in range(4)]) > 0.05  # the windows differ
    with pytest.raises(ConfigError, match="recorded_window 'both'"):
        AttachedDenoiser("temporal", device="cpu", recorded_window="both")
    # a frame with no time axis has no later frames to wait for: recorded at once, not at close
    den = AttachedDenoiser("temporal", output=tmp_path / "z", device="cpu", read_raw=read_raw)
    den.submit(frames[(0, 0)], {"z": 0})
    deadline = time.monotonic() + 60
    while den._writer is None or den._writer.written < 1:
        assert time.monotonic() < deadline, "a frame without a time axis waited for later frames"
        time.sleep(0.05)
    assert den.close(progress=False).frames_written == 1


def test_handing_over_a_frame_never_waits_for_the_model(tmp_path, monkeypatch):
    release = threading.Event()
    started = threading.Event()
    original = Denoiser.push

    timed_out = []

    def blocked(self, frame, stream="live", **options):
        started.set()
        if not release.wait(30):  # a submit that waited for the model would never let the test release it
            timed_out.append(stream)
        return original(self, frame, stream, **options)

    monkeypatch.setattr(Denoiser, "push", blocked)
    frames = _poisson_frames(1, 12)
    den = AttachedDenoiser("fast", output=tmp_path / "den", device="cpu", max_queued=4)
    for t in range(12):
        den.submit(frames[(0, t)], {"time": t})
    assert started.wait(20)
    handed_over_while_blocked = den.report.frames_submitted
    deadline = time.monotonic() + 30
    while den._writer.parked < 1:  # the recorder's backlog past max_queued goes to disk meanwhile
        assert time.monotonic() < deadline
        time.sleep(0.02)
    release.set()
    report = den.close(progress=False)
    assert handed_over_while_blocked == 12 and not timed_out  # every submit returned while the model was stuck
    assert report.frames_written == 12 and report.frames_parked >= 1  # nothing lost: past max_queued, parked on disk
    assert report.display_dropped >= 1  # the display skipped stale frames instead of queueing them


def test_the_precision_asked_for_is_the_one_each_channel_runs(tmp_path):
    frames = _poisson_frames(1, 2)
    den = AttachedDenoiser("fast", output=tmp_path / "den", device="cpu", precision="bf16")
    for t in range(2):
        den.submit(frames[(0, t)], {"time": t})
    report = den.close(progress=False)
    assert report.frames_written == 2
    assert den._states[None].denoiser.precision == "bf16"
    assert den._states[None].denoiser.model.head.weight.dtype == torch.bfloat16


def test_display_rate_cap_shows_the_newest_frame_and_leaves_the_rest(tmp_path):
    frames = _poisson_frames(1, 10)
    shown = []
    den = AttachedDenoiser("fast", device="cpu", display_fps=0.01, display=shown.append)  # one frame per 100 s at most
    den.submit(frames[(0, 0)], {"time": 0})
    for _ in range(300):  # the first frame is shown at once
        if shown:
            break
        time.sleep(0.1)
    for t in range(1, 10):
        den.submit(frames[(0, t)], {"time": t})
    report = den.close(progress=False)
    # the cap holds the rest back, each replaced by the next; closing shows the newest
    assert report.display_denoised == 2 and report.display_dropped == 8
    assert [f.info["axes"]["time"] for f in shown] == [0, 9]


def _fields(n: int, seed: int):
    """(noisy frame, 16-frame average, truth) of ``n`` fields of soft blobs: ~20 photons, gain 2, offset 100."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        truth = 2 + 40 * gaussian_filter((rng.random((96, 96)) < 0.02).astype(float), 2.0) * 12
        frames = [100 + 2 * rng.poisson(truth) for _ in range(17)]
        out.append((frames[0].astype(np.uint16), np.mean(frames[1:], axis=0).astype(np.float32), 100 + 2 * truth))
    return out


def test_adapting_a_channel_from_pairs_swaps_it_in_when_better_on_held_out_frames(tmp_path):
    from livedenoise.config import TrainingConfig

    training = TrainingConfig(patch_size=32, batch_size=8, lr_pairs=2e-3, max_steps=60, steps_per_validation=10,
                              patience=8)
    fields = _fields(5, 1)
    den = AttachedDenoiser(identity_backbone(), output=tmp_path / "den", device="cpu")
    den.submit(fields[0][0], {"time": 0, "channel": "GFP"})
    for _ in range(300):  # recorded before the adaptation starts
        if den.written == 1:
            break
        time.sleep(0.1)
    outcome = den.adapt([f[0] for f in fields[:4]], [f[1] for f in fields[:4]], channel="GFP", training=training,
                        match_reference=False, save_to=tmp_path / "gfp.safetensors").result(timeout=600)
    assert outcome.mode == "pairs" and outcome.steps > 0 and outcome.adapted
    assert outcome.swapped and outcome.adapted_mse < outcome.backbone_mse * 0.99
    assert outcome.held_out == "calibration pair not used for training"
    assert (tmp_path / "gfp.safetensors").is_file()
    test_noisy, _, truth = fields[4]
    den.submit(test_noisy, {"time": 1, "channel": "GFP"})  # after the swap: the adapted model
    report = den.close(progress=False)
    assert report.channels["GFP"]["model"] == "identity+pairs (GFP)"
    assert report.channels["GFP"]["adaptations"][0]["swapped"] is True
    got = _read_all(report.denoised_path)
    after = got[(("channel", "GFP"), ("time", 1))].astype(np.float64)
    assert score(truth, after).psnr > score(truth, test_noisy).psnr + 2.0  # identity before, a denoiser now
    from ndstorage import Dataset

    ds = Dataset(report.denoised_path)
    models = [ds.read_metadata(channel="GFP", time=t)["livedenoise"]["model"] for t in (0, 1)]
    ds.close()
    assert models == ["identity", "identity+pairs (GFP)"]  # each recorded frame names its model


def test_an_adaptation_that_is_not_better_is_not_swapped_in(tmp_path, monkeypatch):
    import livedenoise.attach.denoiser as attached
    from livedenoise.config import TrainingConfig

    monkeypatch.setattr(attached, "swap_scores", lambda *a, **k: (1.0, 1.0, False))
    fields = _fields(2, 2)
    den = AttachedDenoiser(identity_backbone(), device="cpu")
    outcome = den.adapt([f[0] for f in fields], [f[1] for f in fields], training=TrainingConfig(
        patch_size=32, batch_size=8, max_steps=20, steps_per_validation=10, lr_pairs=2e-3)).result(timeout=600)
    assert outcome.adapted and not outcome.swapped and "kept" in outcome.reason
    assert outcome.held_out.startswith("held-out bottom rows")  # 2 pairs: scored on rows never trained on
    den.submit(fields[0][0], {"time": 0})
    report = den.close(progress=False)
    assert report.channels["(all)"]["model"] == "identity"
    other = AttachedDenoiser("fast", channels={"BF": None}, device="cpu")
    with pytest.raises(ValueError, match="pairs must match"):
        other.adapt([fields[0][0]], [])
    with pytest.raises(ConfigError, match="'BF' is left raw"):
        other.adapt([fields[0][0]], channel="BF")
    other.close(progress=False)


def test_a_second_adaptation_starts_from_the_first_and_failures_are_one_sentence(tmp_path, monkeypatch):
    import livedenoise.training.finetune as ft
    from livedenoise.config import TrainingConfig

    training = TrainingConfig(patch_size=32, batch_size=8, lr_pairs=2e-3, max_steps=40, steps_per_validation=10,
                              patience=8)
    fields = _fields(4, 3)
    den = AttachedDenoiser(identity_backbone(), device="cpu")
    den.submit(fields[0][0], {"time": 0, "channel": "GFP"})
    with pytest.raises(ConfigError, match="name the channel to adapt"):
        den.adapt([f[0] for f in fields], [f[1] for f in fields])  # frames have channels: which one?
    first = den.adapt([f[0] for f in fields], [f[1] for f in fields], channel="GFP", training=training,
                      match_reference=False).result(timeout=600)
    assert first.swapped
    starts = []
    real = ft.finetune

    def spy(backbone, *a, **k):
        starts.append(backbone.name)
        return real(backbone, *a, **k)

    monkeypatch.setattr(ft, "finetune", spy)
    second = den.adapt([f[0] for f in fields], [f[1] for f in fields], channel="GFP", training=training,
                       match_reference=False).result(timeout=600)
    assert starts == ["identity+pairs (GFP)"]  # from the adapted model, and scored against it
    assert second.backbone_mse is not None and second.backbone_mse < first.backbone_mse

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ft, "finetune", broken)
    failed = den.adapt([f[0] for f in fields], [f[1] for f in fields], channel="GFP").result(timeout=600)
    assert not failed.swapped and failed.reason.startswith("adaptation failed, the current model is kept: ")
    assert "out of memory" in failed.reason
    report = den.close(progress=False)
    assert next(a["swapped"] for a in report.channels["GFP"]["adaptations"]) is True
    assert len(report.channels["GFP"]["adaptations"]) == 3
    with pytest.raises(ValueError, match="two consecutive frames"):
        AttachedDenoiser("fast", device="cpu").adapt([fields[0][0]])


def test_temporal_windows_of_many_fields_stay_within_their_memory_bound(tmp_path, monkeypatch):
    import livedenoise.attach.denoiser as attached

    frames = _poisson_frames(5, 3)
    per_window = 5 * 64 * 64 * 12
    monkeypatch.setattr(attached, "STREAM_MEMORY_BYTES", 2 * 3 * per_window)  # room for 3 fields per consumer
    den = AttachedDenoiser("temporal", output=tmp_path / "den", device="cpu")
    for t in range(3):
        for p in range(5):
            den.submit(frames[(p, t)], {"time": t, "position": p})
    report = den.close(progress=False)
    assert report.frames_written == 15 and not report.errors  # every frame still recorded
    kept = [s for s in den._states[None].denoiser._streams if s.startswith("record|")]
    assert len(kept) <= 3 and den._dropped_windows > 0


def test_repeated_channel_configs_in_one_sequence_are_told_apart():
    import useq

    from livedenoise.attach import channel_names

    seq = useq.MDASequence(channels=[{"config": "DAPI", "exposure": 10}, {"config": "GFP"},
                                     {"config": "DAPI", "exposure": 100}], time_plan={"interval": 0, "loops": 1})
    names = channel_names(seq)
    assert names == {0: "DAPI#0", 1: "GFP", 2: "DAPI#2"}
    axes = [useq_axes(e, names) for e in seq]
    assert [a["channel"] for a in axes] == ["DAPI#0", "GFP", "DAPI#2"] and axes[0]["time"] == 0


def test_attached_denoiser_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(LivedenoiseError, match="no-such-model"):
        AttachedDenoiser(tmp_path / "no-such-model.safetensors")
    with pytest.raises(ConfigError, match="max_queued"):
        AttachedDenoiser("fast", max_queued=0)
    with pytest.raises(ConfigError, match="display_fps"):
        AttachedDenoiser("fast", display_fps=0)
    with pytest.raises(ConfigError, match="Precision 'int4' is unknown"):
        AttachedDenoiser("fast", precision="int4")
    den = AttachedDenoiser("fast", device="cpu")
    with pytest.raises(ValueError, match="read_raw"):
        den.submit(None, {"time": 0})
    den.close(progress=False)
    with pytest.raises(RuntimeError, match="closed"):
        den.submit(np.zeros((8, 8), np.uint16), {"time": 0})


@pytest.mark.parametrize("script, extra", [("attach_pycromanager.py", []), ("attach_pycromanager.py", ["--saved"]),
                                           ("attach_mda.py", []), ("attach_mda.py", ["--show"]),
                                           ("attach_mda.py", ["--calibrate", "2", "--calibrate-seconds", "8"])])
def test_examples_run_on_the_simulated_microscope(tmp_path, script, extra):
    import os

    if "--show" in extra:
        extra = [*extra, "--screenshot", str(tmp_path / "viewer.png")]
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), "-o", str(tmp_path / "out"),
                             "--time-points", "2", *extra], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "24 denoised frames written" in result.stdout
    assert "scored against the simulator's truth" in result.stdout
    if script == "attach_mda.py":  # every recorded frame scored too, per channel
        recorded = re.findall(r"channel \S+: 12 recorded frames scored against the simulator's truth: ([\d.]+) dB",
                              result.stdout)
        assert len(recorded) == 2 and all(float(v) > 20 for v in recorded), result.stdout
    if "--calibrate" in extra:  # one calibration line per channel, each with the steps its fine-tune ran
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("calibration, channel")]
        assert len(lines) == 2 and all(int(ln.split(": ")[1].split()[0]) > 0 for ln in lines), result.stdout
    if "--show" in extra:  # the viewer showed frames while the MDA ran, and its screenshot was saved
        shown = int(result.stdout.split("viewer: ")[1].split()[0])
        assert shown >= 1 and (tmp_path / "viewer.png").stat().st_size > 1000


def test_mda_calibration_takes_pairs_with_the_users_channels_and_swaps_each_channel(simulated_core, tmp_path):
    """calibrate(): reference pairs (a frame + the mean of `average` more) per channel at chosen positions, with the
    user's channel configs; each channel's model is adapted and swapped in; the stage goes back; the user's own MDA
    then records with the adapted models."""
    import useq

    from livedenoise.attach import calibration_sequence
    from livedenoise.config import TrainingConfig
    from simulators.core import LIGHT_GROUP

    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 2},
                                channels=[{"config": c, "group": LIGHT_GROUP} for c in CHANNELS])
    cal = calibration_sequence(sequence, [(0.0, 0.0), (30.0, 0.0), (0.0, 30.0)], average=4)
    assert len(list(cal)) == 3 * 2 * 5 and [c.config for c in cal.channels] == CHANNELS
    with pytest.raises(ConfigError, match="at least one stage position"):
        calibration_sequence(sequence, [])
    training = TrainingConfig(patch_size=32, batch_size=8, lr_pairs=2e-3, max_steps=40, steps_per_validation=10,
                              patience=8)
    den = MDADenoiser(identity_backbone(), output=tmp_path / "den", device="cpu")
    start = (simulated_core.getXPosition(), simulated_core.getYPosition())
    futures = den.calibrate(simulated_core, sequence, [(0.0, 0.0), (30.0, 0.0), (0.0, 30.0)], average=4,
                            training=training)
    assert (simulated_core.getXPosition(), simulated_core.getYPosition()) == pytest.approx(start)
    assert sorted(futures) == sorted(CHANNELS)
    outcomes = {ch: f.result(timeout=600) for ch, f in futures.items()}
    assert all(o.mode == "pairs" and o.steps > 0 and o.swapped for o in outcomes.values()), outcomes
    simulated_core.mda.run(sequence, output=[den])
    report = den.result
    assert report is not None and report.frames_written == 4
    assert {ch: report.channels[ch]["model"] for ch in CHANNELS} == {ch: f"identity+pairs ({ch})" for ch in CHANNELS}


def test_pycromanager_calibration_takes_pairs_per_channel_keeps_them_and_swaps_each_channel(simulated_core, tmp_path):
    """calibrate(): per position and channel a frame plus `average` more (saved, nothing lost), then one adaptation
    per channel with a model; a channel left raw is skipped; bad arguments are one sentence each."""
    from pycromanager import Acquisition

    from livedenoise.config import TrainingConfig
    from simulators.core import LIGHT_GROUP

    training = TrainingConfig(patch_size=32, batch_size=8, lr_pairs=2e-3, max_steps=40, steps_per_validation=10,
                              patience=8)
    den = PycromanagerDenoiser(identity_backbone(), channels={"20%": None}, output=tmp_path / "den", device="cpu")
    with pytest.raises(ConfigError, match="channel_group"):
        den.calibrate([(0.0, 0.0)], tmp_path / "cal", channels=CHANNELS)
    with pytest.raises(ConfigError, match="one per channel"):
        den.calibrate([(0.0, 0.0)], tmp_path / "cal", channel_group=LIGHT_GROUP, channels=CHANNELS, exposures_ms=[10.0])
    futures = den.calibrate([(0.0, 0.0), (30.0, 0.0), (0.0, 30.0)], tmp_path / "cal", channel_group=LIGHT_GROUP,
                            channels=CHANNELS, average=4, core=simulated_core, training=training)
    assert list(futures) == ["5%"]  # "20%" is left raw
    outcome = futures["5%"].result(timeout=600)
    assert outcome.mode == "pairs" and outcome.steps > 0 and outcome.swapped
    saved = next((tmp_path / "cal").glob("livedenoise-calibration*"))
    assert len(_read_all(saved)) == 3 * 2 * 5  # every calibration frame is on disk
    with Acquisition(directory=str(tmp_path / "raw"), name="exp", image_process_fn=den.process,
                     show_display=False) as acq:
        acq.acquire(_events(simulated_core, time_points=1))
    report = den.close(progress=False)
    assert list(report.channels) == ["5%"] and report.channels["5%"]["model"] == "identity+pairs (5%)"


def test_calibration_guards_missing_frames_duplicate_presets_and_sparse_channels(simulated_core, tmp_path):
    """Every channel is checked before any fine-tune starts; a preset named twice is refused; a channel imaged only
    every other time point still gets all its calibration frames; the pycromanager path puts the stage back."""
    import useq

    from livedenoise.attach import calibration_sequence
    from simulators.core import LIGHT_GROUP

    den = PycromanagerDenoiser(identity_backbone(), device="cpu")
    started = []
    den.adapt = lambda *a, **k: started.append(k.get("channel"))  # type: ignore[method-assign]
    frames = {(0, "a"): [np.zeros((8, 8))] * 3, (0, "b"): [np.zeros((8, 8))] * 2}
    with pytest.raises(LivedenoiseError, match=r"did not deliver 3 frames.*'b' at position 0: 2"):
        den.adapt_from_calibration(frames, ["a", "b"], 1, 2)
    assert started == []  # nothing started for "a" either
    with pytest.raises(ConfigError, match="name a preset twice"):
        den.calibrate([(0.0, 0.0)], tmp_path / "cal", channel_group=LIGHT_GROUP, channels=["5%", "5%"])
    sparse = useq.MDASequence(channels=[{"config": "5%", "group": LIGHT_GROUP, "acquire_every": 2}],
                              time_plan={"interval": 0, "loops": 4})
    assert len(list(calibration_sequence(sparse, [(0.0, 0.0)], average=3))) == 4
    simulated_core.setXYPosition(5.0, 7.0)
    simulated_core.waitForSystem()
    futures = den.calibrate([(0.0, 0.0), (30.0, 0.0)], tmp_path / "cal", channel_group=LIGHT_GROUP, channels=["5%"],
                            average=2, core=simulated_core)
    assert started == ["5%"] and list(futures) == ["5%"]
    assert (simulated_core.getXPosition(), simulated_core.getYPosition()) == pytest.approx((5.0, 7.0))
    den.close(progress=False)


def test_an_attached_mda_can_record_its_denoised_frames_as_ome_zarr(simulated_core, tmp_path):
    import useq

    from livedenoise.io import open_dataset
    from simulators.core import LIGHT_GROUP

    with pytest.raises(ConfigError, match="output_format 'tiff' is unknown"):
        MDADenoiser("fast", output=tmp_path / "den", output_format="tiff")
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 2},
                                channels=[{"config": c, "group": LIGHT_GROUP} for c in CHANNELS])
    handler = MDADenoiser("fast", output=tmp_path / "den", device="cpu", output_format="ome-zarr")
    simulated_core.mda.run(sequence, output=[handler])
    report = handler.result
    assert report is not None and report.frames_written == 4 and not report.errors
    assert report.denoised_path.endswith("denoised.ome.zarr") and [p.name for p in (tmp_path / "den").iterdir()] == [
        "denoised.ome.zarr"]
    ds = open_dataset(report.denoised_path)
    assert ds.axes == "TCYX" and tuple(ds.shape[:2]) == (2, 2) and ds.dtype == np.uint16
    assert all(ds.read_frame(i).any() for i in np.ndindex(2, 2))  # every frame written


def test_held_out_mse_reads_outputs_as_the_noisy_values_they_imply_against_noisy_targets():
    """Flat Poisson frames at 2 e- (calibrated, 1 e- read noise), each scored against the next. An output at the exact
    mean is the better estimate; one at the level whose transform equals the mean transformed noisy value is biased
    low. Scored as transforms directly, the biased one wins (the flaw); read as noisy values (``noisy_targets``),
    the exact one does."""
    from livedenoise.checkpoint import Checkpoint
    from livedenoise.normalization import Normalizer
    from livedenoise.swap_check import held_out_mse

    rng = np.random.default_rng(3)
    lam, read = 2.0, 1.0
    frames = [(rng.poisson(lam, (64, 64)) + rng.normal(0, read, (64, 64)) + 100.0).astype(np.float32) for _ in range(5)]
    norm = Normalizer(offset=100.0, gain=1.0, noise_b=read**2, scale=10.0)
    exact = float(norm.forward(np.array([lam + 100.0]))[0])  # network units: the transform of the mean
    noisy_mean = float(np.mean([norm.forward(f).astype(np.float64).mean() for f in frames]))  # E[GAT(noisy)]

    def Constant(value: float) -> torch.nn.Module:  # noqa: N802  (a 1x1 convolution that outputs ``value``)
        conv = torch.nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.fill_(value)
        return conv

    pairs = [(frames[i], frames[i + 1]) for i in range(4)]
    scores = {}
    for name, value in (("exact", exact), ("biased", noisy_mean)):
        ckpt = Checkpoint(Constant(value), "unet", {}, norm, name=name)
        scores[name] = (held_out_mse(ckpt, pairs, norm, device="cpu"),
                        held_out_mse(ckpt, pairs, norm, device="cpu", noisy_targets=True))
    assert exact - noisy_mean > 0.01  # 0.1+ noise sd apart
    assert scores["biased"][0] < scores["exact"][0]  # as transforms: the biased level wins
    assert scores["exact"][1] < scores["biased"][1]  # as noisy values: the mean wins
