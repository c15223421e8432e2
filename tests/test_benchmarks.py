"""The benchmark scripts' own logic: the VST peers, the dev-pairs benchmark's plumbing, README tables.

Benchmarks are never part of CI's measurements, but the pieces the README's numbers rest on are
tested here: the variance-stabilised classical peers (noise fit, unbiased inverse), the dev-pairs
run on a tiny pair folder (classical methods and the shipped fast backbone only: no peers
environment needed), and that README.md's results tables equal what `benchmarks/readme_tables.py`
generates from the committed result files (so they cannot drift).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(BENCH))
    try:
        import common as mod

        yield mod
    finally:
        sys.path.remove(str(BENCH))


def _camera_frame(rng: np.random.Generator, photons: np.ndarray, gain: float = 2.0, offset: float = 100.0,
                  read_sd: float = 1.5) -> np.ndarray:
    """Poisson-Gaussian frame in ADU: gain * Poisson(photons) + offset + N(0, read_sd^2)."""
    return (gain * rng.poisson(photons) + offset + rng.normal(0, read_sd, photons.shape)).astype(np.float32)


def test_vst_inverse_is_unbiased_at_a_few_photons(common):
    rng = np.random.default_rng(0)
    lam, gain, offset = 2.0, 2.0, 100.0
    frame = _camera_frame(rng, np.full((256, 256), lam), gain, offset)
    z, norm = common.vst_forward(frame)
    assert float(np.std(z)) == pytest.approx(1.0, abs=0.1)  # stabilised: noise sd 1 with the image's own fit
    # A perfect denoiser of a flat image returns E[z] everywhere; its inverse must be the true mean.
    back = float(common.vst_inverse(np.full(z.shape, z.mean()), norm).mean())
    assert back == pytest.approx(gain * lam + offset, abs=0.15 * gain * lam)
    algebraic = float(norm.copy(inversion="algebraic").inverse(np.full(z.shape, z.mean())).mean())
    assert abs(algebraic - (gain * lam + offset)) > abs(back - (gain * lam + offset))


def test_vst_nlm_beats_the_raw_frame(common):
    from livedenoise.metrics import score

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:128, :128]
    photons = 5.0 + 40.0 * (np.sin(xx / 6.0) > 0.3) * (np.cos(yy / 9.0) > -0.2)
    truth = (2.0 * photons + 100.0).astype(np.float32)
    frame = _camera_frame(rng, photons)
    raw, nlm = score(truth, frame).psnr, score(truth, common.vst_nlm(frame)).psnr
    assert nlm > raw + 3.0, (raw, nlm)


def _write_pairs(root: Path, rng: np.random.Generator) -> None:
    import tifffile
    from scipy.ndimage import gaussian_filter

    _yy, xx = np.mgrid[:64, :64]
    for set_name, n in (("alpha", 2), ("beta", 1)):
        (root / set_name).mkdir(parents=True)
        for i in range(n):
            # stripes seen through a microscope: blurred by a PSF (sigma 1 px), as every real image is
            photons = gaussian_filter(3.0 + 30.0 * ((xx + 7 * i) % 16 < 5), 1.0, mode="wrap")
            clean = np.rint(2.0 * photons + 100.0).astype(np.uint16)
            tifffile.imwrite(root / set_name / f"p{i}_clean.tif", clean)
            tifffile.imwrite(root / set_name / f"p{i}_noisy.tif", _camera_frame(rng, photons).round().astype(np.uint16))


def test_dev_pairs_benchmark_runs_every_method_and_records_fits(tmp_path):
    _write_pairs(tmp_path / "pairs", np.random.default_rng(2))
    out = tmp_path / "out"
    fast = REPO / "livedenoise" / "weights" / "backbone-fast.safetensors"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_dev_pairs.py"), "--pairs", str(tmp_path / "pairs"), "--output", str(out),
         "--backbones", "fast", "--budget", "2", "--per-set", "1", "--crop", "48",
         "--classical", "raw,gaussian,vst+nlm", "--model", str(fast), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "dev-pairs.json").read_text())
    rows = data["rows"]
    assert {r["set"] for r in rows} == {"alpha", "beta"} and all(r["pair"] == "p0" for r in rows)
    assert all(r["shape"] == [48, 48] for r in rows)  # cropped (the crop is written to a temporary folder)
    methods = {r["method"] for r in rows}
    assert methods == {"raw", "gaussian", "vst+nlm", "denoise fast (default)", "denoise backbone-fast",
                       "adapt self fast (2 s)"}
    by = {(r["set"], r["method"]): r for r in rows}
    for s in ("alpha", "beta"):
        assert by[(s, "vst+nlm")]["psnr"] > by[(s, "raw")]["psnr"] + 2
        assert by[(s, "denoise fast (default)")]["psnr"] > by[(s, "raw")]["psnr"] + 1
        # the --model path is the same fast backbone through the same call: the same output
        assert by[(s, "denoise backbone-fast")]["psnr"] == pytest.approx(by[(s, "denoise fast (default)")]["psnr"],
                                                                        abs=1e-6)
        fit = by[(s, "adapt self fast (2 s)")]["fit"]
        assert fit["steps"] >= 1 and 0 <= fit["best_step"] <= fit["steps"] and fit["stopped"]
        assert fit["adapted"] == (fit["best_step"] > 0)
        assert by[(s, "raw")]["fit"] is None
    assert data["machine"]["cores"] >= 1 and data["machine"]["date"] and data["config"]["budget_s"] == 2
    overall = {a["method"]: a for a in data["overall"]}
    assert overall["raw"]["sets"] == 2 and overall["adapt self fast (2 s)"]["fits"] == 2
    md = (out / "dev-pairs.md").read_text()
    assert "## Per set (PSNR dB / SSIM)" in md and "| alpha | 1 |" in md and "Not run" not in md
    assert not list((tmp_path / "pairs").rglob("*.ome.tif"))  # nothing written next to the data


def test_readme_tables_match_the_committed_results():
    """README.md's generated tables equal what the committed result files give (CI catches drift)."""
    proc = subprocess.run([sys.executable, str(BENCH / "readme_tables.py"), "--check"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_readme_tables_check_fails_on_a_changed_number(tmp_path):
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- results:begin ")
    while "|" not in readme[start:readme.index("<!-- results:end ", start)]:  # the first block with a table
        start = readme.index("<!-- results:begin ", start + 1)
    end = readme.index("<!-- results:end ", start)
    block = readme[start:end]
    digits = next(i for i, ch in enumerate(block) if ch.isdigit() and i > block.index("|"))
    changed = readme[:start] + block[:digits] + str((int(block[digits]) + 1) % 10) + block[digits + 1:] + readme[end:]
    copy = tmp_path / "README.md"
    copy.write_text(changed)
    script = [sys.executable, str(BENCH / "readme_tables.py"), "--readme", str(copy)]
    proc = subprocess.run([*script, "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "differ" in proc.stdout
    assert subprocess.run(script, capture_output=True, text=True, timeout=120).returncode == 0  # rewrite
    assert copy.read_text() == readme


def test_backbone_benchmark_tables_and_bm3d_cache(common, tmp_path, monkeypatch):
    """bench_backbone: the Δ column is candidate − VST+BM3D per set; BM3D outputs are cached by input and code."""
    import bench_backbone as bb

    rows = []
    for group, values in (("setA", {"noisy": 20.0, "vst+bm3d": 28.0, "cand": 29.5}),
                          ("1 ph confocal", {"noisy": 15.0, "vst+bm3d": 22.0, "cand": 21.0})):
        for method, psnr in values.items():
            rows.append({"case": group, "group": group, "structure": "" if group == "setA" else "puncta",
                         "method": method, "psnr": psnr, "ssim": 0.5, "psnr_flat": psnr + 1, "ssim_flat": 0.6})
    payload = {"machine": common.machine(), "quick": True,
               "models": {"cand": {"name": "backbone-fast", "total_steps": 123, "seconds_per_image": 0.1}},
               "rows": rows}
    md = bb.render(payload)
    assert "| setA | 20.00 / 0.500 | 28.00 / 0.500 | 29.50 / 0.500 | +1.50 |" in md
    assert "| 1 ph confocal | 16.00 / 0.600 | 23.00 / 0.600 | 22.00 / 0.600 | -1.00 |" in md  # against the sample
    assert "| 1 ph confocal | 15.00 / 0.500 | 22.00 / 0.500 | 21.00 / 0.500 | -1.00 |" in md  # camera's image
    assert "123 training steps" in md

    calls = []
    monkeypatch.setattr(bb, "CACHE", tmp_path)
    monkeypatch.setattr(bb, "vst_bm3d", lambda frames: (calls.append(len(frames)) or [f * 0 + 1 for f in frames],
                                                         [0.5] * len(frames)))
    frames = [np.full((8, 8), i, np.uint16) for i in range(5)]
    outs, _ = bb.cached_bm3d(frames)
    again, secs = bb.cached_bm3d(frames)
    assert calls == [4, 1] and all(np.array_equal(a, b) for a, b in zip(outs, again, strict=True)) and secs == [0.5] * 5
    monkeypatch.setattr(bb, "_peer_code_version", lambda: "changed")
    bb.cached_bm3d(frames[:1])
    assert calls == [4, 1, 1]  # another code version computes anew


def test_pairs_benchmark_table_counts_folds_and_gains(common):
    import bench_pairs as bp

    rows = [{"set": "s", "held_out": f"p{i}", "vst+bm3d": 30.0, "backbone": 29.0, "fine-tuned": 29.0 + g,
             "steps": 100, "best_step": 80, "adapted": g > 0} for i, g in enumerate((1.0, 0.0))]
    md = bp.render(rows, "backbone-fast", 5, 60.0, common.machine(), heading=False)
    assert "| s | 2 | 30.00 | 29.00 | 29.50 | +0.50 | 100 (80) | 1/2 |" in md


def test_adapt_sim_table_calls_a_check_right_only_when_it_kept_exactly_the_fine_tunes_that_won(common):
    import bench_adapt_sim as bas

    def row(way, backbone, tuned, kept):
        return {"structure": "filaments", "photons": 5.0, "way": way, "steps": 500, "best_step": 400,
                "stopped": "time_budget", "adapted": kept, "rejected": not kept, "note": "",
                "sure_check": {"backbone": 0.2, "adapted": 0.18, "margin": 0.01, "adapted_better": kept,
                               "noise_variance": "one level"},
                "sure_one_level": {"backbone": 0.2, "adapted": 0.18},
                "backbone psnr sample": backbone, "fine-tuned psnr sample": tuned,
                "chosen psnr sample": tuned if kept else backbone, "backbone psnr with pattern": 22.0,
                "fine-tuned psnr with pattern": 22.3}

    payload = {"rows": [row("no calibration", 26.0, 25.5, True), row("calibration", 27.0, 26.5, False),
                        row("calibration", 27.0, 27.4, True)],
               "size": 256, "budget_s": 60.0, "model": "backbone-fast", "model_steps": 45100,
               "machine": common.machine(), "command": "python benchmarks/bench_adapt_sim.py"}
    md = bas.render(payload, heading=False)
    # one level (0.20 -> 0.18, beyond the margin) keeps all three: right only where the fine-tune won
    assert "the check was right in 2 of 3 fits" in md
    assert "one noise level everywhere it would have been right in 1" in md
    assert md.count("**no**") == 3
    assert "Mean: backbone 26.67, chosen 26.63" in md  # (25.5 + 27.0 + 27.4) / 3


def test_real_structure_time_lapses_drift_bleach_and_know_their_moving_puncta(common, tmp_path):
    """bench_temporal --structures: a pair folder's high-SNR image (one per set, big enough) drifts by whole pixels,
    bleaches, and carries moving puncta; the camera model images it; the truth without the pattern is known."""
    import bench_temporal as bt
    import tifffile

    rng = np.random.default_rng(3)
    for name, side in (("small", 200), ("big", 320)):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "x_clean.tif", (rng.random((side, side)) * 200).astype(np.uint8))
        tifffile.imwrite(tmp_path / name / "x_noisy.tif", np.zeros((side, side), np.uint8))
    picked = bt.real_structures(tmp_path)
    assert picked == [tmp_path / "big" / "x_clean.tif"]  # 200 px is too small for 256² and its drift
    s = bt.real_structure_series(picked[0], 20.0, frames=9, size=256, seed=0)
    assert s.name == "big/x 20 ph" and s.noisy.shape == s.flat.shape == s.moving.shape == (9, 256, 256)
    assert s.noisy.dtype == np.uint16 and 0 < s.moving.mean() < 0.2
    assert not np.array_equal(s.truth, s.flat)  # the camera's fixed pattern is in one truth only
    # the structure drifts by whole pixels: frame 8 is frame 0 moved by (round(0.3*8), round(0.5*8)) = (2, 4) px,
    # dimmer by the bleaching (compared where no punctum is, above the background)
    still = ~s.moving[0][2:, 4:] & ~s.moving[8][:-2, :-4]
    a, b = s.flat[0][2:, 4:][still], s.flat[8][:-2, :-4][still]
    assert np.corrcoef(a, b)[0, 1] > 0.99 and 0.85 < np.median(b - b.min()) / np.median(a - a.min()) < 0.97
    unshifted = np.corrcoef(s.flat[0][:-2, :-4][still], s.flat[8][:-2, :-4][still])[0, 1]
    assert unshifted < 0.5  # in place, the frames do not match: the structure moved
    with pytest.raises(ValueError, match="too small"):
        bt.real_structure_series(tmp_path / "small" / "x_clean.tif", 5.0, frames=9, size=256, seed=0)


def test_temporal_benchmark_series_know_their_moving_pixels_and_score_them_apart(common):
    import bench_temporal as bt

    s = bt.simulate_series(20.0, "confocal", frames=3, size=64, seed=1)
    assert s.noisy.shape == s.truth.shape == s.flat.shape == s.moving.shape == (3, 64, 64)
    assert s.noisy.dtype == np.uint16 and 0 < s.moving.mean() < 0.5  # some pixels show moving puncta, most do not
    assert not np.array_equal(s.truth, s.flat)  # the camera's fixed pattern is in one truth, not the other
    nearly = s.flat + np.random.default_rng(0).normal(0, 0.01, s.flat.shape).astype(np.float32)
    perfect = bt.score_series(s, nearly)
    assert perfect["psnr"] > 60 and perfect["psnr_moving"] > 60 and perfect["psnr_rest"] > 60
    spoiled = nearly.copy()
    spoiled[s.moving] += 50.0  # errors only on the moving puncta
    scores = bt.score_series(s, spoiled)
    assert scores["psnr_moving"] < 40 and scores["psnr_rest"] > 60
    payload = {"cases": [{"case": "20 ph confocal", "methods": {"raw": scores, "x": perfect},
                          "seconds_per_frame": {"x": 0.01}}],
               "models": {"x": {"name": "m", "arch": "unet", "total_steps": 3}}, "frames": 3, "size": 64}
    payload.update(bt.summarise(payload["cases"]))
    md = bt.render(payload)
    assert ("| 20 ph confocal |" in md and "mean PSNR on moving puncta" in md
            and "| ms per frame (1 thread; peers as first computed, cached) | - | 10 |" in md)
    # the cost row names the thread count the run had
    assert "| ms per frame (2 threads; " in bt.render({**payload, "machine": {"torch_threads": 2}})


def test_pairs_benchmark_exact_references_are_the_noise_free_sample_and_its_psf_option_sharpens_it(common):
    from bench_temporal_pairs import calibration_pairs

    lows_exact, exact = calibration_pairs(20.0, "confocal", 2, 64, seed=3, reference="exact")
    lows_avg, averaged = calibration_pairs(20.0, "confocal", 2, 64, seed=3, reference="average")
    # the same low frames (the camera's noise included): only the references differ
    assert all(np.array_equal(a, b) for a, b in zip(lows_exact, lows_avg, strict=True))
    assert exact[0].dtype == np.float32 and exact[0].shape == (64, 64)
    # a 16-frame mean carries noise and the camera's pattern; the exact reference neither: the low frame is far off it
    off_avg = float(np.std(averaged[0] - exact[0]))
    off_low = float(np.std(lows_exact[0].astype(np.float32) - exact[0]))
    assert 0 < off_avg < 0.6 * off_low
    _, sharp = calibration_pairs(20.0, "confocal", 2, 64, seed=3, psf_sigma=0.3, reference="exact")

    def detail(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x, axis=1)).mean() / x.std())

    assert detail(sharp[0]) > 1.2 * detail(exact[0])  # the same fields through a 0.3 px PSF instead of 1 px


def test_acquisition_overhead_is_a_ratio_taken_within_each_round(common):
    import bench_speed

    plain_mode = bench_speed.PLAIN_MODE
    rows = [{"mode": "hook", "round": 1, "camera_fps": 45.0}, {"mode": plain_mode, "round": 1, "camera_fps": 50.0},
            {"mode": "hook", "round": 2, "camera_fps": 38.0}, {"mode": plain_mode, "round": 2, "camera_fps": 40.0},
            {"mode": plain_mode, "round": 3, "camera_fps": 30.0}, {"mode": "hook", "round": 3, "camera_fps": 30.0}]
    hook, plain = bench_speed.acquisition_summary(rows)  # the baseline is found by name, not by order
    assert plain["median_ratio"] == 1.0 and plain["median_fps"] == 40.0
    # the ratios of rounds 1, 2, 3: 0.90, 0.95, 1.00
    assert hook["median_ratio"] == pytest.approx(0.95) and hook["min_ratio"] == pytest.approx(0.90)
    assert hook["max_ratio"] == pytest.approx(1.0) and hook["rounds"] == 3 and hook["median_fps"] == 38.0


def test_attach_benchmark_counts_every_raw_frame_and_the_overhead(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_attach.py"), "--frames", "8", "--roi", "64", "--fps", "200",
         "--modes", "none", "process-capped", "saved", "mda-none", "mda", "--output", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["mode"]: r for r in json.loads((out / "attach.json").read_text())["rows"]}
    assert set(rows) == {"none", "process-capped", "saved", "mda-none", "mda", "none (again)", "mda-none (again)"}
    for mode, r in rows.items():
        assert r["frames"] == r["on_disk"] == 8 and r["lost"] == 0 and not r["errors"], mode
        assert r["altered"] == 0, mode
    assert rows["none"]["overhead_pct"] is None and rows["mda-none"]["overhead_pct"] is None
    base = (rows["none"]["wall_s"] + rows["none (again)"]["wall_s"]) / 2
    assert rows["saved"]["overhead_pct"] == pytest.approx(100 * (rows["saved"]["wall_s"] / base - 1))
    mda_base = (rows["mda-none"]["wall_s"] + rows["mda-none (again)"]["wall_s"]) / 2
    assert rows["mda"]["overhead_pct"] == pytest.approx(100 * (rows["mda"]["wall_s"] / mda_base - 1))
    assert all(r["display_denoised"] >= 1 for m, r in rows.items() if not m.startswith(("none", "mda-none")))
    assert "| process-capped | 8 |" in (out / "attach.md").read_text()


def test_roofline_counts_the_multiply_adds_of_every_convolution():
    """The floor the README derives for each backbone rests on this count: a conv, a strided conv and a transposed
    conv of known sizes, then the fast backbone against its architecture's closed form."""
    import torch

    sys.path.insert(0, str(BENCH))
    try:
        from bench_roofline import multiply_adds
    finally:
        sys.path.remove(str(BENCH))
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 2, stride=2),
                              torch.nn.ConvTranspose2d(8, 2, 2, stride=2))
    expected = 16 * 16 * 4 * 1 * 9 + 8 * 8 * 8 * 4 * 4 + 8 * 8 * 8 * 2 * 4
    assert multiply_adds(net, 16) == expected
    from livedenoise.modelspec import load_model_spec

    unet = load_model_spec("fast", device="cpu").model
    widths, size, total = list(unet.widths), 512, 0
    for i, w in enumerate(widths):  # encoders: two 3x3 convs each (in: the previous width); 2x2 stride-2 downs
        px = (size >> i) ** 2
        total += px * 9 * w * (1 if i == 0 else widths[i - 1]) + px * 9 * w * w
        if i < len(widths) - 1:
            total += (size >> (i + 1)) ** 2 * 4 * w * w
    for i in range(len(widths) - 2, -1, -1):  # transposed-conv ups and decoders on the way back
        px = (size >> i) ** 2
        total += (size >> (i + 1)) ** 2 * 4 * widths[i + 1] * widths[i]
        total += px * 9 * 2 * widths[i] * widths[i] + px * 9 * widths[i] * widths[i]
    total += size * size * widths[0]  # the 1x1 head
    assert multiply_adds(unet, size) == total
