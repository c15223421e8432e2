"""`livedenoise evaluate` end to end on a tiny configuration, plus its building blocks.

A tiny U-Net (widths 4, 8) stands in for the shipped backbone so that every fit takes a fraction of a
second: these tests check the experiments' plumbing and the report, not denoising quality.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from livedenoise.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    import torch

    from livedenoise.checkpoint import Checkpoint
    from livedenoise.models import build_model
    from livedenoise.normalization import Normalizer
    from livedenoise.training.simdata import BACKBONE_SCALE

    torch.manual_seed(0)
    ckpt = Checkpoint(build_model("unet", widths=(4, 8)), "unet", {"widths": [4, 8]},
                      Normalizer(vst=True, scale=BACKBONE_SCALE), name="tiny-backbone")
    path = tmp_path_factory.mktemp("backbone") / "tiny.safetensors"
    ckpt.save(path)
    return ckpt, path


def tiny_config(**changes):
    from livedenoise.evaluate import preset

    return replace(preset("tiny"), **changes)


def test_simulated_task_is_seeded_and_held_out():
    from livedenoise.evaluate import SimulatedTask

    task = SimulatedTask("filaments", 32)
    a = task.train_frames(50.0, seed=0, n=2)
    b = task.train_frames(50.0, seed=0, n=2)
    assert a[0].shape == (32, 32) and a[0].dtype == np.uint16
    np.testing.assert_array_equal(a[0], b[0])  # same seed, same frames
    assert not np.array_equal(a[0], task.train_frames(50.0, seed=1, n=1)[0])
    np.testing.assert_array_equal(task.fields("train", 0, 1)[0], task.fields("train", 0, 3)[0])  # nested in n
    fresh = SimulatedTask("filaments", 32)
    np.testing.assert_array_equal(fresh.fields("train", 0, 3)[2], task.fields("train", 0, 3)[2])  # order-independent
    _test_noisy, test_truth = task.test_set(50.0, seed=0, n=2)
    assert not any(np.array_equal(t, f) for t in task.fields("test", 0, 2) for f in task.fields("train", 0, 2))
    # averaging 16 frames leaves about 1/16 of the noise variance
    single = task.test_set(50.0, 0, 1, average=1)[0][0].astype(np.float64) - test_truth[0]
    avg = task.test_set(50.0, 0, 1, average=16)[0][0].astype(np.float64) - test_truth[0]
    assert np.var(avg) < np.var(single) / 8
    # the peak signal scales the photons linearly (background included) and the camera response with it
    f = task.fields("test", 0, 1)[0]
    assert task.photons(f, 500.0).max() == pytest.approx(500.0 * (1 + task.background_fraction), rel=1e-5)
    d_big = task.truth(f, 500.0) - task.truth(f, 5.0)
    d_small = task.truth(f, 50.0) - task.truth(f, 5.0)
    np.testing.assert_allclose(d_big, 11.0 * d_small, rtol=1e-3, atol=1e-2)


def test_simulated_task_images_its_sample_through_the_psf_it_is_given():
    from scipy.ndimage import laplace

    from livedenoise.evaluate import SimulatedTask

    def detail(x: np.ndarray) -> float:  # energy of the finest scale, relative to the field's variance
        x = x.astype(np.float64)
        return float((laplace(x) ** 2).sum() / ((x - x.mean()) ** 2).sum())

    default = SimulatedTask("puncta", 64).fields("train", 0, 1)[0]
    sharp = SimulatedTask("puncta", 64, psf_sigma=0.3).fields("train", 0, 1)[0]
    assert sharp.shape == default.shape == (64, 64)
    assert detail(sharp) > 3 * detail(default)  # the same puncta, nearly pixel-sharp instead of 1 px of blur


def test_aggregate_averages_images_then_reports_sd_over_seeds():
    from livedenoise.evaluate.report import aggregate

    rows = [
        {"experiment": "x", "method": "m", "seed": 0, "peak": 1.0, "mse": 1.0, "psnr": 1.0, "ssim": 0.1, "frc": 0.1},
        {"experiment": "x", "method": "m", "seed": 0, "peak": 1.0, "mse": 3.0, "psnr": 1.0, "ssim": 0.3, "frc": 0.1},
        {"experiment": "x", "method": "m", "seed": 1, "peak": 1.0, "mse": 6.0, "psnr": 1.0, "ssim": 0.5, "frc": 0.1},
    ]
    (agg,) = aggregate(rows, ("peak",))
    assert agg["seeds"] == 2
    assert agg["mse"] == pytest.approx(4.0)  # seed means 2 and 6
    assert agg["mse_sd"] == pytest.approx(math.sqrt(8.0))
    assert agg["ssim"] == pytest.approx(0.35)


def test_evaluate_runs_every_experiment_and_writes_the_report(tmp_path, tiny_backbone):
    from livedenoise.evaluate import EXPERIMENTS, load_result, run_evaluation

    ckpt, _ = tiny_backbone
    cfg = tiny_config(peaks=(10.0, 200.0), stability_seeds=2, train_sizes=(1, 2), pair_counts=(2,), averages=(1, 4))
    result = run_evaluation(tmp_path / "report", cfg, backbone=ckpt, device="cpu")
    out = tmp_path / "report"
    for name in ("report.md", "results.json", "results.csv", "sweep.png", "stability.png", "size.png", "loss.png",
                 "pairs.png", "averages.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    for title in ("across peak signal", "Rerun stability", "training-set size", "L1 vs L2", "few low/high pairs",
                  "averages of 1..64"):
        assert title in report
    assert ("| peak photons | method | MSE | PSNR (dB) | SSIM | mean FRC | PSNR no FP | SSIM no FP | seeds | fit s | "
            "steps (best) | stopped |") in report
    assert "| transfer l1 |" in report.replace("| 10 | transfer l1 |", "| transfer l1 |")
    assert "pairs (normaliser per input)" in report
    data = json.loads((out / "results.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["config"]["name"] == "tiny"
    assert {r["experiment"] for r in data["rows"]} == set(EXPERIMENTS)
    sweep = [r for r in data["rows"] if r["experiment"] == "sweep"]
    assert {r["method"] for r in sweep} == set(cfg.sweep_methods)
    assert len(sweep) == len(cfg.peaks) * len(cfg.sweep_methods) * cfg.n_test
    assert {r["seed"] for r in data["rows"] if r["experiment"] == "stability"} == {0, 1}
    for r in data["rows"]:
        assert 0 <= r["mse"] < 10 and -1 <= r["ssim"] <= 1 and r["frc"] is not None
        assert r["psnr_flat"] is not None and -1 <= r["ssim_flat"] <= 1  # both truths, every simulated row
        if r["method"] in ("transfer", "transfer-n2same", "scratch", "pairs", "pairs-scratch"):
            # every fit records its steps, the step it kept and why it stopped
            assert r["steps"] >= 1 and 0 <= r["best_step"] <= r["steps"] and r["stopped"] and r["adapted"] is not None
            assert not r["adapted"] or r["best_step"] > 0  # "adapted" means weights from a later validation
        else:
            assert r["adapted"] is None and r["steps"] == 0
    # scratch trains with its own budget: up to scratch_max_steps, more than a fine-tune's max_steps
    assert max(r["steps"] for r in sweep if r["method"] == "scratch") > cfg.max_steps
    # the noise-free reference makes the noisy input score worse at 10 than at 200 photons
    noisy = {r["peak"]: r["mse"] for r in sweep if r["method"] == "noisy"}
    assert noisy[10.0] > noisy[200.0]
    # fits are shared: the sweep's transfer at the stability peak is the stability run's seed 0
    fit_s = {(r["experiment"], r["method"], r["peak"], r["seed"]): r["train_s"] for r in data["rows"]}
    assert fit_s[("sweep", "transfer", 10.0, 0)] == fit_s[("stability", "transfer", 10.0, 0)] > 0
    assert len(result.rows) == len(data["rows"])
    again = load_result(out)  # reports can be re-rendered from results.json without re-running fits
    assert again.config == cfg and len(again.rows) == len(result.rows)
    assert again.rows[0].mse == pytest.approx(result.rows[0].mse)


def _write_pairs(root, rng):
    import tifffile

    for set_name, n in (("two", 2), ("one", 1)):
        (root / set_name).mkdir(parents=True)
        for i in range(n):
            clean = (rng.random((40, 40)) * 200).astype(np.uint8)
            noisy = np.clip(clean * 0.5 + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
            tifffile.imwrite(root / set_name / f"p{i}_clean.tif", clean)
            tifffile.imwrite(root / set_name / f"p{i}_noisy.tif", noisy)


def test_cli_evaluates_real_pairs(tmp_path, tiny_backbone, capsys):
    from livedenoise.cli import main

    _, path = tiny_backbone
    _write_pairs(tmp_path / "pairs", np.random.default_rng(0))
    out = tmp_path / "real"
    rc = main(["evaluate", "--preset", "tiny", "--pairs", str(tmp_path / "pairs"), "--backbone", str(path),
               "--affine", "two", "--crop", "32", "--device", "cpu", "--no-plots", "-o", str(out)])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert {r["set"] for r in rows} == {"two", "one"}
    assert all(r["affine"] == (r["set"] == "two") for r in rows)
    # leave-one-out pairs training needs a second pair: present for "two", skipped for "one"
    assert {r["method"] for r in rows if r["set"] == "two"} >= {"noisy", "gaussian", "nlm", "backbone", "transfer",
                                                                "scratch", "pairs"}
    assert "pairs" not in {r["method"] for r in rows if r["set"] == "one"}
    for r in rows:  # real pairs record every fit too
        trained = r["method"] in ("transfer", "transfer-n2same", "scratch", "pairs")
        assert ((r["steps"] >= 1 and bool(r["stopped"]) and r["adapted"] is not None) if trained
                else r["adapted"] is None)
    report = (out / "report.md").read_text()
    assert "## Real low/high pairs" in report and "| set | method |" in report and "Affine-fit sets: two" in report
    assert not list(out.glob("*.png"))


def test_user_errors_are_one_line(tmp_path, tiny_backbone, capsys):
    from livedenoise.cli import main
    from livedenoise.evaluate import affine_sets_from

    _, path = tiny_backbone
    assert main(["evaluate", "--preset", "tiny", "--experiments", "sweep,nonsense", "--backbone", str(path),
                 "-o", str(tmp_path / "x")]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["evaluate", "--preset", "tiny", "--pairs", str(tmp_path / "missing"), "--backbone", str(path),
                 "-o", str(tmp_path / "y")]) == 2
    assert "pair folder not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="zzz"):
        affine_sets_from("zzz", ["a", "b"])
    assert affine_sets_from("none", ["a"]) == set() and affine_sets_from("all", ["a", "b"]) == {"a", "b"}


def test_truth_without_fixed_pattern_is_flat_where_the_sample_is():
    from livedenoise.evaluate import SimulatedTask

    task = SimulatedTask("filaments", 32)
    uniform = np.full((32, 32), 0.5, np.float32)
    with_fp, flat = task.truth(uniform, 100.0), task.truth_flat(uniform, 100.0)
    assert np.ptp(flat) == 0.0  # a uniform sample: the pattern-free truth is one value
    assert np.std(with_fp) > 0.5  # the simulator's truth carries the per-pixel offset/gain pattern
    assert float(np.median(with_fp)) == pytest.approx(float(flat[0, 0]), rel=0.01)
    # on a real field both differ only by the pattern: far less than the signal
    f = task.fields("test", 0, 1)[0]
    d = task.truth(f, 100.0) - task.truth_flat(f, 100.0)
    assert abs(float(np.median(d))) < 0.5 and np.std(d) < 0.2 * np.std(task.truth_flat(f, 100.0))
    assert len(task.test_truth_flat(100.0, 0, 2)) == 2


def test_fit_info_says_when_a_fit_changed_nothing():
    from types import SimpleNamespace

    from livedenoise.evaluate import FitInfo

    def result(steps, best, **extra):
        return SimpleNamespace(steps=steps, best_step=best, stopped="time_budget", best_val_loss=1.0,
                               initial_val_loss=1.0, **extra)

    assert FitInfo.from_fit(1.0, result(0, 0)).adapted is False  # no step at all
    assert FitInfo.from_fit(1.0, result(17, 0)).adapted is False  # steps, but the initial weights kept
    info = FitInfo.from_fit(1.0, result(40, 20))
    assert info.adapted is True and info.row_fields() == {"train_s": 1.0, "steps": 40, "stopped": "time_budget",
                                                          "best_step": 20, "adapted": True}
    assert FitInfo.from_fit(1.0, result(40, 20, adapted=False)).adapted is False  # the loop's own flag wins


def test_report_labels_untrained_rows_and_claims_nothing_without_converged_scratch():
    from livedenoise.evaluate.report import aggregate, method_label, pretrained_vs_scratch

    assert method_label({"method": "transfer", "adapted": False, "steps": 0}) == "transfer [0 steps: not trained]"
    assert method_label({"method": "scratch", "adapted": False, "steps": 12}) == "scratch [initial weights kept]"
    assert method_label({"method": "transfer", "adapted": True, "steps": 12}) == "transfer"

    def rows(stopped, scratch_psnr):
        base = {"experiment": "sweep", "seed": 0, "peak": 5.0, "mse": 0.1, "ssim": 0.5, "frc": 0.5}
        return [{**base, "method": "transfer", "psnr": 20.0, "steps": 30, "best_step": 10, "stopped": "early_stop",
                 "adapted": True},
                {**base, "method": "scratch", "psnr": scratch_psnr, "mse": 0.2, "steps": 300, "best_step": 250,
                 "stopped": stopped, "adapted": True}]

    aggs = aggregate(rows("time_budget", 15.0), ("peak",))
    (scr,) = [a for a in aggs if a["method"] == "scratch"]
    assert scr["steps"] == 300 and scr["best_step"] == 250 and scr["stopped"] == "time_budget"
    text = "\n".join(pretrained_vs_scratch(aggs, "peak", "peak"))
    assert "did not converge (stopped: time_budget after 300 steps, best step 250)" in text
    assert "no claim" in text and "beats" not in text
    text = "\n".join(pretrained_vs_scratch(aggregate(rows("early_stop", 15.0), ("peak",)), "peak", "peak"))
    assert "transfer beats converged scratch on PSNR (dB) at 1/1 peak settings (mean difference +5.00 dB)" in text


def test_scratch_fits_get_their_own_budget_and_the_pretraining_rate():
    from livedenoise.evaluate import preset

    cfg = preset("quick")
    fine, scratch = cfg.training(method="transfer"), cfg.training(method="scratch")
    assert (fine.max_steps, fine.time_budget_s) == (cfg.max_steps, cfg.time_budget_s)
    assert (scratch.max_steps, scratch.time_budget_s) == (cfg.scratch_max_steps, cfg.scratch_time_budget_s)
    assert scratch.lr_self_supervised == scratch.lr_pairs == cfg.scratch_lr > fine.lr_self_supervised
    assert scratch.steps_per_validation == cfg.scratch_steps_per_validation > fine.steps_per_validation
    assert cfg.training(method="pairs-scratch").time_budget_s == cfg.scratch_time_budget_s
    with pytest.raises(ConfigError, match="scratch"):
        replace(cfg, scratch_time_budget_s=0).validate()
