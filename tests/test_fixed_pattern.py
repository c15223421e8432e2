"""The camera's fixed pattern: estimated across calibration fields and removed from the references; the simulator's
ground truth without it."""
from __future__ import annotations

import numpy as np
import pytest

from livedenoise.training.fixed_pattern import MIN_FIELDS, estimate_fixed_pattern, remove_fixed_pattern


def _fields(n: int, pattern: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """``n`` averaged references of different fields: blobs and lines at random places, a little noise, the pattern."""
    rng = np.random.default_rng(seed)
    h, w = pattern.shape
    yy, xx = np.mgrid[:h, :w]
    refs = []
    for _ in range(n):
        img = np.full((h, w), 100.0) + 20 * np.sin(xx / 17 + rng.uniform(0, 6))  # shading: kept by the blur
        for _ in range(6):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            img += 30 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(1, 3) ** 2))
        img[int(rng.integers(0, h)), :] += 40  # a sharp line in a different row of every field
        refs.append((img + pattern + rng.normal(0, 0.3, (h, w))).astype(np.float32))
    return refs


def test_the_pattern_shared_by_the_fields_is_found_and_removed() -> None:
    pattern = np.random.default_rng(7).normal(0, 2.0, (64, 64)).astype(np.float32)
    refs = _fields(5, pattern)
    est = estimate_fixed_pattern(refs)
    assert est.shape == (64, 64) and abs(float(est.mean())) < 1e-4
    truth = pattern - pattern.mean()
    assert np.corrcoef(est.ravel(), truth.ravel())[0, 1] > 0.9
    removal = remove_fixed_pattern(refs)
    assert removal.pattern is not None and removal.fields == 5 and removal.note.startswith("removed")
    # what is left of the pattern in every cleaned reference (the reference without its pattern subtracted)
    left = [np.std(c - (r - pattern)) for c, r in zip(removal.references, refs, strict=True)]
    assert max(left) < 0.5 * float(pattern.std())
    assert removal.describe()["removed"] is True and removal.describe()["pattern_sd_adu"] == pytest.approx(
        float(est.std()), rel=1e-5)


def test_too_few_fields_or_mismatched_frames_are_left_as_they_are() -> None:
    pattern = np.zeros((32, 32), np.float32)
    two = _fields(MIN_FIELDS - 1, pattern)
    kept = remove_fixed_pattern(two)
    assert kept.pattern is None and "at least 3" in kept.note
    assert all(np.array_equal(a, b) for a, b in zip(kept.references, two, strict=True))
    mixed = [*_fields(2, pattern), np.zeros((16, 16), np.float32)]
    assert remove_fixed_pattern(mixed).pattern is None
    assert remove_fixed_pattern(mixed).describe() == {"removed": False, "fields": 3, "note": remove_fixed_pattern(
        mixed).note, "pattern_sd_adu": None}


def test_dense_texture_or_the_same_field_twice_leave_the_references_alone() -> None:
    rng = np.random.default_rng(11)
    pattern = rng.normal(0, 1.5, (64, 64)).astype(np.float32)
    dense = [(100 + rng.normal(0, 30, (64, 64)) + pattern).astype(np.float32) for _ in range(5)]  # texture >> pattern
    kept = remove_fixed_pattern(dense)
    assert kept.pattern is None and "is stronger than the camera's pattern" in kept.note
    assert all(np.array_equal(a, b) for a, b in zip(kept.references, dense, strict=True))
    fields = _fields(4, pattern)
    same = remove_fixed_pattern([fields[0], fields[1], fields[0] + 0.5, fields[2]])
    assert same.pattern is None and "fields 1 and 3 look like the same field" in same.note


def test_a_held_out_target_gets_the_pattern_without_shaping_it() -> None:
    pattern = np.random.default_rng(7).normal(0, 2.0, (64, 64)).astype(np.float32)
    fields = _fields(5, pattern)
    alone = remove_fixed_pattern(fields[:4])
    with_target = remove_fixed_pattern(fields[:4], also=[fields[4]])
    assert alone.pattern is not None and with_target.pattern is not None
    np.testing.assert_array_equal(with_target.pattern, alone.pattern)  # the target took no part in the estimate
    assert len(with_target.references) == 5 and with_target.fields == 4
    np.testing.assert_allclose(with_target.references[4], fields[4] - alone.pattern, rtol=1e-6)
    few = remove_fixed_pattern(fields[:2], also=[fields[4]])  # nothing removed: the target comes back unchanged
    assert few.pattern is None and np.array_equal(few.references[2], fields[4])


def test_an_attached_calibration_removes_the_pattern_unless_told_not_to(monkeypatch) -> None:
    from livedenoise.attach import AttachedDenoiser

    pattern = np.random.default_rng(3).normal(0, 2.0, (64, 64)).astype(np.float32)
    refs = _fields(4, pattern, seed=5)
    frames = {(p, None): [refs[p]] + [refs[p]] * 3 for p in range(4)}  # 1 low frame + an average of 3
    seen = []
    den = AttachedDenoiser("fast", device="cpu")
    try:
        monkeypatch.setattr(den, "adapt", lambda noisy, clean, **kw: seen.append(clean))
        den.adapt_from_calibration(frames, [None], 4, 3)
        den.adapt_from_calibration(frames, [None], 4, 3, remove_fixed_pattern=False)
        from types import SimpleNamespace

        den._calibration = SimpleNamespace(shape=(64, 64))  # a camera calibration of this ROI: its maps do it
        den.adapt_from_calibration(frames, [None], 4, 3)
        den._calibration = SimpleNamespace(shape=(128, 128))  # another ROI: only its medians apply, so remove
        den.adapt_from_calibration(frames, [None], 4, 3)
    finally:
        den.close(progress=False)
    cleaned, untouched, calibrated, other_roi = seen
    assert all(np.array_equal(a, b) for a, b in zip(untouched, refs, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(calibrated, refs, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(other_roi, cleaned, strict=True))
    truth = pattern - pattern.mean()
    left = np.mean([np.corrcoef((c - r + truth).ravel(), truth.ravel())[0, 1] for c, r in zip(cleaned, refs,
                                                                                             strict=True)])
    assert left < 0.5  # what was subtracted is (most of) the pattern: adding it back leaves little correlation


def test_the_simulator_knows_the_sample_without_the_camera_s_pattern() -> None:
    from simulators.config import load_microscope_config
    from simulators.microscope import SimulatedMicroscope

    mic = SimulatedMicroscope(load_microscope_config(roi_width=48, roi_height=40, exposure_ms=20.0, light_power=50.0,
                                                     seed=2))
    photons = mic.expected_photons()  # what the next snap renders
    frame = mic.snap()
    cam, maps = mic.camera, mic.camera.maps
    sample = cam.without_pattern(frame.truth, 0.02)
    # rendered directly: the same photons through a camera with the median offset, gain and dark current everywhere
    e = np.minimum(cam.config.quantum_efficiency * photons + np.median(maps.dark_current) * 0.02, cam.config.full_well)
    flat = np.clip(np.median(maps.gain) * e + np.median(maps.offset), 0, cam.max_adu)
    assert sample.shape == frame.truth.shape == (40, 48) and sample.dtype == np.float32
    np.testing.assert_allclose(sample, flat, rtol=1e-4, atol=1e-2)
    assert np.std(frame.truth - sample) > 0.5  # the camera's truth does carry a pattern


def test_a_calibration_pair_at_live_settings_gives_a_live_window_and_an_independent_target() -> None:
    from livedenoise.acquisition.plans import HEAD_FRAMES, Illumination, PairPlan, assemble_pairs

    rng = np.random.default_rng(0)
    ill = Illumination(20.0, 10.0)
    plan = PairPlan(positions=[(0.0, 0.0)], low=ill, high=ill, reference="average", average=10)
    frames = {(0, 0, 0): rng.poisson(50, (8, 8)).astype(np.uint16)}
    frames.update({(0, 1, r): rng.poisson(50, (8, 8)).astype(np.uint16) for r in range(10)})
    (pair,) = assemble_pairs(plan, frames)
    assert len(pair.head) == HEAD_FRAMES
    got = pair.sequence_and_rest()
    assert got is not None
    seq, rest = got
    assert seq.shape == (1 + HEAD_FRAMES, 8, 8) and np.array_equal(seq[0], frames[(0, 0, 0)])
    assert np.array_equal(seq[1:], np.stack([frames[(0, 1, r)] for r in range(HEAD_FRAMES)]))
    want = np.mean([frames[(0, 1, r)] for r in range(HEAD_FRAMES, 10)], axis=0)
    np.testing.assert_allclose(rest, want, rtol=1e-5)  # the mean of the reference frames not in the window
    brighter = PairPlan(positions=[(0.0, 0.0)], low=ill, high=Illumination(200.0, 10.0), reference="exposure")
    (other,) = assemble_pairs(brighter, {(0, 0, 0): frames[(0, 0, 0)], (0, 1, 0): frames[(0, 1, 0)]})
    assert other.head == [] and other.sequence_and_rest() is None  # a brighter reference is not a live frame


def test_held_out_sequences_score_a_temporal_model_as_the_display_shows_it() -> None:
    import torch

    from livedenoise.checkpoint import Checkpoint
    from livedenoise.inference import Denoiser
    from livedenoise.models import build_model
    from livedenoise.models.temporal import temporal_from_frame_model
    from livedenoise.normalization import Normalizer
    from livedenoise.swap_check import held_out_mse

    norm = Normalizer(offset=100.0, gain=2.0, noise_b=2.25, scale=10.0)
    torch.manual_seed(0)
    model = temporal_from_frame_model(build_model("unet", widths=[4, 8]))
    with torch.no_grad():
        model.fusion.trust.fill_(2.0)
    ckpt = Checkpoint(model=model, arch="unet-temporal", arch_kwargs=model.arch_kwargs, normalizer=norm, name="t")
    rng = np.random.default_rng(1)
    seq = (2.0 * rng.poisson(30.0, (5, 24, 24)) + 100).astype(np.float32)
    target = np.full((24, 24), 160.0, np.float32)
    den = Denoiser(ckpt, device="cpu")
    shown = [den.push(f, stream="x") for f in seq][-1]
    alone = den.denoise(seq[-1])
    assert not np.allclose(shown, alone)  # the fusion changes the newest frame
    want = float(np.mean((norm.to_stabilised(shown) - norm.to_stabilised(target)) ** 2))
    assert held_out_mse(ckpt, [(seq, target)], norm, device="cpu") == pytest.approx(want, rel=1e-5)
    single = float(np.mean((norm.to_stabilised(alone) - norm.to_stabilised(target)) ** 2))
    assert held_out_mse(ckpt, [(seq[-1], target)], norm, device="cpu") == pytest.approx(single, rel=1e-5)


def test_an_attached_calibration_of_a_temporal_model_holds_the_last_field_out_as_a_live_window(monkeypatch) -> None:
    from livedenoise.attach import AttachedDenoiser

    pattern = np.random.default_rng(3).normal(0, 2.0, (64, 64)).astype(np.float32)
    refs = _fields(5, pattern, seed=5)
    rng = np.random.default_rng(9)
    frames = {(p, None): [refs[p] + rng.normal(0, 1, refs[p].shape).astype(np.float32) for _ in range(1 + 8)]
              for p in range(5)}
    seen = []
    den = AttachedDenoiser("temporal", device="cpu")
    try:
        monkeypatch.setattr(den, "adapt", lambda noisy, clean, **kw: seen.append((noisy, clean, kw)))
        den.adapt_from_calibration(frames, [None], 5, 8)
        den.adapt_from_calibration(frames, [None], 3, 8)  # 2 fields would be left for the pattern: no window
    finally:
        den.close(progress=False)
    (noisy, clean, kw), (noisy3, _, kw3) = seen
    assert len(noisy) == len(clean) == 4  # the last field is not trained on
    (window, target), = kw["held_out"]
    last = frames[(4, None)]
    assert window.shape == (5, 64, 64) and np.array_equal(window, np.stack(last[:5]))
    # the target: the mean of the other 4 frames, minus the pattern estimated from the 4 training fields
    removal = remove_fixed_pattern([np.mean(np.stack(frames[(p, None)][1:]), axis=0) for p in range(4)])
    assert removal.pattern is not None
    np.testing.assert_allclose(target, np.mean(np.stack(last[5:]), axis=0) - removal.pattern, atol=1e-3)
    assert kw["held_out_source"].startswith("the last calibration field, fused")
    assert len(noisy3) == 3 and kw3["held_out"] is None


def test_adapt_decides_the_swap_on_the_held_out_frames_it_is_given() -> None:
    from livedenoise.attach import AttachedDenoiser

    rng = np.random.default_rng(2)
    truth = _fields(1, np.zeros((64, 64), np.float32), seed=4)[0]
    noisy = [(truth + rng.normal(0, 5, truth.shape)).astype(np.float32) for _ in range(3)]
    den = AttachedDenoiser("fast", device="cpu")
    try:
        out = den.adapt(noisy, [truth] * 3, held_out=[(noisy[0], truth)], held_out_source="frames I kept out",
                        time_budget_s=2.0).result(timeout=120)
    finally:
        den.close(progress=False)
    assert out.held_out == "frames I kept out" and out.mode == "pairs"
    assert out.steps > 0 and (out.backbone_mse is not None or not out.adapted)


def test_saturated_pixels_get_no_pattern_subtracted() -> None:
    pattern = np.random.default_rng(7).normal(0, 2.0, (64, 64)).astype(np.float32)
    fields = _fields(5, pattern)
    fields[2][10:14, 20:24] = 4095.0  # clipped in one field
    removal = remove_fixed_pattern(fields, saturation=4095.0)
    assert removal.pattern is not None
    assert np.all(removal.pattern[10:14, 20:24] == 0) and np.any(removal.pattern != 0)
    assert np.all(removal.references[2][10:14, 20:24] == 4095.0)  # still marked saturated for the swap check


def test_nearly_empty_fields_share_only_the_pattern_and_are_not_taken_for_one_field() -> None:
    """Blank fields carry nothing but the pattern (pixel and column offsets) and noise: the pattern is what all
    fields share, so it must not make them look like the same field."""
    rng = np.random.default_rng(4)
    pattern = (rng.normal(0, 2.0, (64, 64)) + rng.normal(0, 1.5, (1, 64))).astype(np.float32)
    blank = [(100 + pattern + rng.normal(0, 0.5, (64, 64))).astype(np.float32) for _ in range(4)]
    removal = remove_fixed_pattern(blank)
    assert removal.pattern is not None, removal.note
    assert np.corrcoef(removal.pattern.ravel(), (pattern - pattern.mean()).ravel())[0, 1] > 0.9


def test_a_real_adaptation_scores_a_held_out_sequence_with_matched_references() -> None:
    from livedenoise.attach import AttachedDenoiser

    rng = np.random.default_rng(5)
    truth = _fields(1, np.zeros((64, 64), np.float32), seed=6)[0]
    frames = [(truth + rng.normal(0, 5, truth.shape)).astype(np.float32) for _ in range(8)]
    den = AttachedDenoiser("temporal", device="cpu")
    try:  # match_reference=True (the default): the reference is matched to the sequence's newest frame
        out = den.adapt(frames[:3], [truth] * 3, held_out=[(np.stack(frames[3:8]), truth)], time_budget_s=2.0,
                        held_out_source="a live window").result(timeout=180)
    finally:
        den.close(progress=False)
    assert not out.reason.startswith("adaptation failed"), out.reason
    assert out.held_out == "a live window" and out.steps > 0
    assert out.adapted is False or out.backbone_mse is not None  # scored whenever it adapted
