"""README.md's results tables, generated from the committed result files so that they cannot drift.

    python benchmarks/readme_tables.py            # rewrite the tables in README.md
    python benchmarks/readme_tables.py --check    # exit 1 (and show the difference) when README.md is stale

Every generated table sits between two marker comments in README.md::

    <!-- results:begin NAME -->
    ...generated, never edited by hand...
    <!-- results:end NAME -->

and ``NAME`` says which committed file under ``benchmarks/results/`` it comes from (:data:`SOURCES`).
A new benchmark run is quoted by committing its files, pointing :data:`SOURCES` at them and running
this script; the test suite runs ``--check`` (``tests/test_benchmarks.py``), so a README number
that no committed file supports fails CI. Only JSON is read: nothing is re-measured.
"""
from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Callable
from functools import partial
from itertools import pairwise
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
README = REPO / "README.md"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

#: Block name -> the committed result file (relative to benchmarks/results/) it is generated from.
SOURCES: dict[str, str] = {
    "sim-sweep": "2026-12-03-evaluate-quick/results.json",
    "sim-averages": "2026-12-03-evaluate-quick/results.json",
    "peers": "2026-12-03-quality-converged/quality-quick.json",
    "dev-pairs": "2026-12-03-dev-pairs-quick-3/dev-pairs-quick.json",
    "stages": "../../livedenoise/weights/backbone-fast.safetensors",
    "stages-standard": "../../livedenoise/weights/backbone-standard.safetensors",
    "stages-lite": "../../livedenoise/weights/backbone-lite.safetensors",
    "pareto": ("2026-12-05-backbone-standard-bf16/shipped/backbone.json", "2026-12-05-speed-lite/speed.json"),
    "speed-gpu": "2026-12-04-speed-gpu/speed.json",
    "speed-temporal-lite": "2026-12-05-speed-temporal-lite/speed.json",
    "temporal-lite": "2026-12-05-temporal-lite/temporal.json",
    "temporal-real": "2026-12-06-temporal-real-structure/temporal.json",
    "temporal-one-pass": ("2026-12-06-live-one-pass/sim/temporal.json", "2026-12-06-live-one-pass/real/temporal.json"),
    "speed-one-pass": "2026-12-06-live-one-pass/speed/speed.json",
    "live-one-pass-512": ("2026-12-06-live-one-pass/live512/live.json",),
    "live-one-pass-256": ("2026-12-06-live-one-pass/live256/live.json",),
    "live-auto": ("2026-12-06-live-auto/live256/live.json", "2026-12-06-live-auto/live512/live.json"),
    "live-auto-afresh": ("2026-12-06-live-auto/live512-judged-afresh/live.json",),
    "live-auto-more": ("2026-12-06-live-auto/live512-more/live.json",),
    "live-give-up-512": ("2026-12-06-give-up-threshold/live512/live.json",),
    "temporal-lite-one-pass": ("2026-12-06-live-one-pass/lite-sim/temporal.json",
                               "2026-12-06-live-one-pass/lite-real/temporal.json"),
    "calibration": "2026-12-05-calibration/calibration.json",
    "adapt-sim": "2026-12-05-gat-target/adapt-sim.json",
    "adapt-sim-psf03": "2026-12-05-adapt-sim-psf03/adapt-sim.json",
    "live-temporal-lite": ("2026-12-05-live-temporal-lite/live.json",),
    "backbones": "2026-12-04-backbone-gpu/backbone.json",
    "pairs": "2026-12-06-pairs-shipped/pairs.json",
    "pairs-lr": ("2026-12-03-pairs-quick/pairs-quick.json", "2026-12-03-pairs-quick-lr1e-4/pairs-quick.json",
                 "2026-12-03-pairs-quick-lr3e-5/pairs-quick.json"),
    "noise-fit": ("2026-12-03-noise-fit-before/dev-pairs.json", "2026-12-03-noise-fit-after/dev-pairs.json"),
    "pairs-layers": ("2026-12-04-pairs-layers/all-p8.json", "2026-12-04-pairs-layers/decoder-p8.json",
                     "2026-12-04-pairs-layers/all-p30.json", "2026-12-04-pairs-layers/decoder-p30.json"),
    "pairs-layers-quick": tuple(f"2026-12-04-pairs-layers-quick/{run}.json" for run in (
        "all-1e-4", "decoder-1e-4", "decoder-3e-4", "last-3e-4", "last-1e-3", "bias-1e-3")),
    "adapt-layers": ("2026-12-04-adapt-layers/adapt-lr1e-4.json", "2026-12-04-adapt-layers/adapt-lr3e-4.json"),
    "adapt-layers-gpu-backbone": ("2026-12-05-adapt-layers/adapt.json",),
    "adapt": ("2026-12-03-adapt-checked/adapt.json", "2026-12-03-adapt-objectives/adapt.json",
              "2026-12-03-adapt-lr/adapt.json"),
    "demo": "2026-12-06-demo-auto/report.json",
    "live-backbones": ("2026-12-04-live-second-pass/live.json", "2026-12-04-live-backbones/live.json",
                       "2026-12-04-live-keep-pattern/live.json"),
    "temporal-pairs": ("2026-12-03-temporal-pairs/temporal-pairs.json",
                       "2026-12-05-temporal-pairs-calibrated/temporal-pairs.json",
                       "2026-12-04-temporal-pairs-fixed-pattern/temporal-pairs.json",
                       "2026-12-05-temporal-pairs-averages-stage/temporal-pairs.json"),
    "pairs-shift": ("2026-12-05-pairs-shift/confocal-fp/temporal-pairs.json",
                    "2026-12-05-pairs-shift/confocal-exact/temporal-pairs.json",
                    "2026-12-05-pairs-shift/psf03-fp/temporal-pairs.json",
                    "2026-12-05-pairs-shift/psf03-exact/temporal-pairs.json"),
    "acquisition-overhead": ("2026-12-05-acquisition-overhead/chunk16.json",
                             "2026-12-05-acquisition-overhead/chunk64.json"),
    "integrity": "2026-12-03-integrity/integrity.json",
    "temporal": "2026-12-04-temporal-second-pass/temporal.json",
    "attach": "2026-12-03-attach/attach.json",
    "precision": "2026-12-05-precision/precision.json",
    "roofline": "2026-12-05-roofline/roofline.json",
    "runtimes": "2026-12-03-runtimes/runtimes.json",
    "allocator": "2026-12-05-allocator-fast/allocator.json",
    "allocator-models": "2026-12-05-allocator-models/allocator.json",
    "live-priority": "2026-12-05-live-priority/live.json",
    "live-display-first": "2026-12-06-live-display-first/live.json",
    "live-give-up-fast": "2026-12-06-give-up-threshold/fast/live.json",
    "recorded-window": "2026-12-06-recorded-window/live.json",
    "recorded-window-512": "2026-12-06-recorded-window/512/live.json",
    "recorder-cores": ("2026-12-06-recorder-cores/live.json", "2026-12-06-recorder-cores/512/live.json"),
    "advice-512": ("2026-12-06-advice-512/live.json", "2026-12-06-advice-512/no-second-pass/live.json"),
    "live-bf16-finetune": "2026-12-05-train-bf16/live.json",
    "train-bf16": "2026-12-05-train-bf16/speed.json",
    "train-layers": "2026-12-05-train-layers/speed.json",
    "precision-xeon": "2026-12-05-xeon-amx/precision.json",
    "roofline-xeon": "2026-12-05-xeon-amx/roofline.json",
    "batch-xeon": ("2026-12-05-xeon-amx/batch-1GB.json", "2026-12-05-xeon-amx/batch-300MB.json"),
    "train-speed": ("2026-12-05-train-speed/before-1.json", "2026-12-05-train-speed/after-1/speed.json",
                    "2026-12-05-train-speed/before-2.json", "2026-12-05-train-speed/after-2/speed.json"),
    # the code of when the speed issue was filed (75b3ad4, before channels-last) against bbe160f's
    "train-speed-vs-issue": ("2026-12-06-train-speed-vs-issue/legacy-1.json",
                             "2026-12-06-train-speed-vs-issue/now-1/speed.json",
                             "2026-12-06-train-speed-vs-issue/legacy-2.json",
                             "2026-12-06-train-speed-vs-issue/now-2/speed.json",
                             "2026-12-06-train-speed-vs-issue/now-last/speed.json"),
    "batch-malloc": ("2026-12-05-batch-malloc/batch-1GB.json", "2026-12-05-batch-malloc/batch-300MB.json"),
    "batch-bf16": ("2026-12-05-batch-bf16/batch-1GB.json",),
    "compile-speed-xeon": "2026-12-05-compile-xeon/speed.json",
    "compile-batch-xeon": ("2026-12-05-compile-xeon/batch-1GB.json",),
    "live-phases-xeon": tuple(f"2026-12-05-demo-512-phases-xeon/{run}/report.json"
                              for run in ("lite-600", "lite-600-compiled", "lite-600-compiled-b", "fast-600",
                                          "fast-600-b", "fast-600-compiled", "fast-600-compiled-b")),
    "foreign-processing": "2026-12-04-foreign-processing/foreign-processing.json",
    "motion-noise": "2026-12-04-motion-noise/motion-noise.json",
    "recorder-backlog": ("2026-12-06-recorder-backlog/300/backlog.json",
                         "2026-12-06-recorder-backlog/600/backlog.json"),
}
BLOCK = re.compile(r"(<!-- results:begin (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- results:end (?P=name) -->)", re.S)


class TablesError(RuntimeError):
    """A marker or a result file is missing or malformed."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _num(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _machine(m: dict, loads: list[float] | None = None, runs: list[dict] | None = None) -> str:
    """Short machine line: CPU, cores, GPU, torch threads, date, load (``loads``: one per run, when several ran;
    ``runs``: the machine records of every run, whose thread counts and dates are then given as ranges)."""
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    load = m.get("load_average")
    busy = f", load {load[0]:g} at the end" if load else ""
    if loads and min(loads) != max(loads):
        busy = f", load {min(loads):g}–{max(loads):g} at the ends of the runs"
    threads = sorted({r["torch_threads"] for r in runs or [m] if r.get("torch_threads") is not None})
    dates = sorted({str(r["date"])[:10] for r in runs or [m] if r.get("date")})
    thread_text = f"{threads[0]}–{threads[-1]}" if len(threads) > 1 else (str(threads[0]) if threads else "?")
    date_text = f"{dates[0]} to {dates[-1]}" if len(dates) > 1 else (dates[0] if dates else "?")
    return (f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores{gpu}), torch {m.get('torch', '?')} with "
            f"{thread_text} thread(s), {date_text}{busy}")


def _source_line(path: str, data: dict, command: str) -> str:
    return (f"*Generated by `python benchmarks/readme_tables.py` from `benchmarks/results/{path}` (`{command}`; "
            f"{_machine(data.get('machine', {}))}).*")


# ---------------------------------------------------------------------------------------------
# renderers: (data, source path) -> Markdown
# ---------------------------------------------------------------------------------------------
def _eval_rows(data: dict, experiment: str) -> list[dict]:
    rows = [r for r in data["rows"] if r["experiment"] == experiment]
    if not rows:
        raise TablesError(f"the evaluation result has no {experiment!r} rows")
    return rows


def sim_sweep(data: dict, path: str) -> str:
    """Peak-signal sweep: PSNR/SSIM against the truth with and without the fixed pattern, each fit's steps."""
    from livedenoise.evaluate.report import aggregate, pretrained_vs_scratch, steps_text

    cfg = data["config"]
    aggs = aggregate(_eval_rows(data, "sweep"), ("peak",))
    body = [[f"{a['peak']:g}", a["method"], _num(a["psnr"], ".2f"), _num(a.get("psnr_flat"), ".2f"),
             _num(a["ssim"], ".3f"), _num(a.get("ssim_flat"), ".3f"), steps_text(a), a.get("stopped") or "-"]
            for a in aggs]
    table = _table(["peak photons", "method", "PSNR (dB)", "PSNR no FP", "SSIM", "SSIM no FP", "steps (best)",
                    "stopped"], body)
    claims = pretrained_vs_scratch(aggs, "peak", "peak")
    command = (f"livedenoise evaluate --quick --experiments {','.join(cfg['experiments'])}: {cfg['structure']} on an "
               f"unseen {cfg['camera']}, {cfg['image_size']}² px, {cfg['n_train']} noisy frames, {cfg['sweep_pairs']} "
               f"pairs, {cfg['sweep_seeds']} seed; fine-tunes ≤ {cfg['time_budget_s']:g} s, scratch ≤ "
               f"{cfg.get('scratch_time_budget_s', math.nan):g} s until early stopping")
    return "\n".join([table, "", *claims, "", _source_line(path, data, command)])


def sim_averages(data: dict, path: str) -> str:
    """Inputs averaged over N frames: PSNR against the truth with / without the fixed pattern, per method."""
    from livedenoise.evaluate.report import aggregate

    aggs = aggregate(_eval_rows(data, "averages"), ("average",))
    methods = list(dict.fromkeys(a["method"] for a in aggs))
    averages = sorted({a["average"] for a in aggs})
    body = []
    for n in averages:
        row = [str(n)]
        for m in methods:
            a = next((a for a in aggs if a["average"] == n and a["method"] == m), None)
            row.append("-" if a is None else f"{_num(a['psnr'], '.2f')} / {_num(a.get('psnr_flat'), '.2f')}")
        body.append(row)
    cfg = data["config"]
    command = (f"livedenoise evaluate --quick --experiments {','.join(cfg['experiments'])}: peak "
               f"{cfg['pairs_peak']:g} photons, models fitted on single frames")
    return "\n".join([_table(["frames averaged", *methods], body), "",
                      "(PSNR dB against the simulator's truth / against the truth without the camera's fixed pattern.)",
                      "", _source_line(path, data, command)])


def peers(data: dict, path: str) -> str:
    """Peers on the same images: simulated (both truths) and real dev pairs, time, training record."""
    from bench_quality import fit_text, summarise

    sim = {a["method"]: a for a in summarise(data["results"], "simulated")}
    real = {a["method"]: a for a in summarise(data["results"], "real")}
    methods = list(dict.fromkeys([*sim, *real]))
    body = []
    for m in methods:
        s, r = sim.get(m), real.get(m)
        body.append([m,
                     f"{_num(s['psnr'], '.2f')} / {_num(s['ssim'], '.3f')}" if s else "-",
                     f"{_num(s['psnr_flat'], '.2f')} / {_num(s['ssim_flat'], '.3f')}" if s else "-",
                     f"{_num(r['psnr'], '.2f')} / {_num(r['ssim'], '.3f')}" if r else "-",
                     _num(r["seconds_per_image"], ".2f") if r else "-",
                     fit_text(r or s or {})])
    n_real = max((a["sets"] for a in real.values()), default=0)
    table = _table(["method", "simulated PSNR / SSIM", "simulated, no FP", f"real dev pairs ({n_real} sets)",
                    "s / image (real)", "training (real)"], body)
    notes = [f"Not run: {k}: {v}" for k, v in (data.get("failures") or {}).items()]
    command = (f"python benchmarks/bench_quality.py{' --quick' if data.get('quick') else ''}: "
               f"{data.get('budget_s', '?'):g} s training budget per case")
    converged = data.get("n2v_converged")
    if converged and any(r["method"] == "n2v (careamics) to convergence" for r in data["results"]):
        command += (f"; N2V to convergence: until {converged['patience_epochs']} epochs without a lower validation "
                    f"loss, at most {converged['cap_s']:g} s per case")
    return "\n".join([table, "", *notes, *([""] if notes else []), _source_line(path, data, command)])


def roofline(data: dict, path: str) -> str:
    """Each backbone's network against the CPU's best convolution rate (``bench_roofline.py``)."""
    from bench_roofline import summary_table

    best = data["best_gmac_s"]
    note = (f"(Best single 3×3 convolution here: fp32 {best['fp32']:.0f}, bf16 {best['bf16']:.0f} GMAC/s. *Floor*: the "
            "network's multiply-adds at that rate. Mpx/s: the network alone, one frame at a time.)")
    return "\n".join([summary_table(data), "", note, "", _source_line(path, data, data["command"])])


def precision(data: dict, path: str) -> str:
    """bf16 against fp32: the quality cost on the dev pairs and the simulator, and the time per 512² frame."""
    from bench_precision import summary_tables

    return "\n".join([summary_tables(data), "", _source_line(path, data, data.get("command", "bench_precision.py"))])


def runtimes(data: dict, path: str) -> str:
    """PyTorch fp32/bf16, ONNX Runtime and OpenVINO on the same input: time and difference from fp32."""
    from bench_runtimes import runtimes_table

    return "\n".join([runtimes_table(data), "", _source_line(path, data, data.get("command", "bench_runtimes.py"))])


def allocator(data: dict, path: str) -> str:
    """Inference and fine-tuning with malloc as it was and with freed memory kept (livedenoise.cpu_memory)."""
    from bench_allocator import render

    return "\n".join([render(data).strip(), "", _source_line(path, data, data.get("command", "bench_allocator.py"))])


def foreign_processing(data: dict, path: str) -> str:
    """Another tool's packages (ONNX, each frame's statistics) run by livedenoise against bioimageio.core."""
    from check_foreign_processing import foreign_table

    return "\n".join([foreign_table(data), "", _source_line(path, data, data.get("command", ""))])


def motion_noise(data: dict, path: str) -> str:
    """A moving sample's noise model: the temporal fit with and without the check against single frames."""
    from bench_motion_noise import motion_table

    return "\n".join([motion_table(data), "", _source_line(path, data, data.get("command", ""))])


#: The command of the GPU speed run of 2026-12-04, whose JSON predates bench_speed.py recording its command.
GPU_SPEED_COMMAND = ("python benchmarks/bench_speed.py --only inference,finetune --devices cuda --models "
                     "fast,standard,temporal --layouts nchw,channels-last --precisions fp16,fp32 --repeats 5 "
                     "--finetune-budget 25")


def speed_gpu(data: dict, path: str) -> str:
    """Inference per model and frame size on a GPU, fp32 and fp16, both layouts; fine-tuning steps per second."""
    cells: dict[tuple[str, int], dict[str, float]] = {}
    for r in (r for r in data.get("inference") or [] if str(r["device"]).startswith("cuda")):
        cells.setdefault((r["model"], r["size"]), {})[f"{r['precision']} {r.get('layout', 'NCHW')}"] = r["ms_per_frame"]
    columns = ["fp32 NCHW", "fp32 channels-last", "fp16 NCHW", "fp16 channels-last"]
    models = list(dict.fromkeys(model for model, _ in cells))  # each model's rows together, smaller frames first
    body = [[model, f"{size}²", *(_num(c.get(col), ".1f") for col in columns)]
            for (model, size), c in sorted(cells.items(), key=lambda kv: (models.index(kv[0][0]), kv[0][1]))]
    tune = [f"{r['steps']} steps in {r['wall_s']:.1f} s ({1 / r['s_per_step']:.0f} steps/s with validation, "
            f"{r['layout']}, {r['stopped'].replace('_', ' ')})" for r in data.get("finetune") or []
            if str(r["device"]).startswith("cuda")]
    lines = [_table(["model", "frame", *(f"{c} (ms)" for c in columns)], body), ""]
    if tune:
        lines += [f"Self-supervised fine-tuning of `fast` on one 256² frame there: {'; '.join(tune)}.", ""]
    return "\n".join([*lines, _source_line(path, data, data.get("command") or GPU_SPEED_COMMAND)])


def compile_speed(data: dict, path: str) -> str:
    """Denoiser passes compiled and not (``bench_speed.py --compiled off,on``, timed interleaved): ms per frame,
    the speed-up, the compiled warm-up call (compilation, where inductor's cache on disk did not have it) and how
    far the outputs differ."""
    rows = [r for r in data.get("inference") or [] if r["device"] == "cpu"]
    plain = {(r["model"], r["size"], r["precision"], r["layout"]): r for r in rows if not r.get("compiled")}
    body = []
    for r in rows:
        base = plain.get((r["model"], r["size"], r["precision"], r["layout"]))
        if not r.get("compiled") or base is None:
            continue
        if r.get("compile_failure"):
            raise TablesError(f"compile-speed: {r['model']} did not compile ({r['compile_failure']})")
        body.append([f"`{r['model']}`", f"{r['size']}²", r["precision"], f"{base['ms_per_frame']:.1f}",
                     f"{r['ms_per_frame']:.1f}", f"{base['ms_per_frame'] / r['ms_per_frame']:.2f}×",
                     f"{r['first_call_s']:.1f}", f"{r['max_diff_vs_uncompiled']:.1e}"])
    if not body:
        raise TablesError("compile-speed: the run has no compiled row beside an uncompiled one")
    table = _table(["model", "frame", "precision", "ms / frame", "compiled ms / frame", "speed-up",
                    "compiled first call s", "max |Δ| / range"], body)
    return "\n".join([table, "", f"Median of the timed runs after one warm-up call, {rows[0]['layout']}.", "",
                      _source_line(path, data, data.get("command"))])


def speed_cpu(data: dict, path: str) -> str:
    """Inference per model on the CPU (``bench_speed.py --only inference``, models timed interleaved): ms per frame
    at each size and the cost relative to the run's first model."""
    rows = [r for r in data.get("inference") or [] if r["device"] == "cpu"]
    kinds = {(r.get("layout", "NCHW"), r.get("precision", "fp32")) for r in rows}
    if not rows or len(kinds) != 1:
        raise TablesError(f"speed: expected CPU rows of one layout and precision, found {sorted(kinds) or 'none'}")
    (layout, precision), = kinds
    sizes = sorted({r["size"] for r in rows})
    ms = {(r["model"], r["size"]): r["ms_per_frame"] for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    body = [[f"`{model}`", *(f"{_num(ms.get((model, size)), '.0f')} ({ms[model, size] / ms[models[0], size]:.2f}×)"
                             if (model, size) in ms and (models[0], size) in ms else "-" for size in sizes)]
            for model in models]
    table = _table(["model", *(f"ms / {size}² frame (× `{models[0]}`)" for size in sizes)], body)
    note = ("A temporal model's frame is `Denoiser.push` of a new frame into a full window (the live cost); median "
            f"of the timed runs, {layout}, {precision}.")
    return "\n".join([table, "", note, "", _source_line(path, data, data.get("command")
                                                          or "python benchmarks/bench_speed.py --only inference")])


def dev_pairs(data: dict, path: str) -> str:
    """The dev-pairs benchmark: overall (each set weighted equally) and per-set PSNR."""
    from bench_dev_pairs import overall_table, per_set_table

    rows = data["rows"]
    cfg = data["config"]
    failures = [f"Not run: {k}: {v}" for k, v in (data.get("failures") or {}).items()]
    command = cfg.get("command") or "python benchmarks/bench_dev_pairs.py"
    what = (f"{cfg['per_set'] or 'every'} pair(s) per set, " + (f"centre crops of {cfg['crop']}²" if cfg["crop"]
                                                                   else "whole images"))
    return "\n".join([overall_table(rows), "", "Per set (PSNR dB / SSIM):", "", per_set_table(rows), "",
                      *failures, *([""] if failures else []),
                      _source_line(path, data, f"{command}; {what}")])


def backbones(data: dict, path: str) -> str:
    """Backbones beside VST+BM3D (same noise estimate) on the dev pairs and the simulator."""
    from bench_backbone import render

    return "\n".join([render(data, heading=False), _source_line(path, data, data.get("command")
                                                                  or "python benchmarks/bench_backbone.py")])


def pairs(data: dict, path: str) -> str:
    """Few-pair fine-tuning, leave one out, on the dev sets with enough pairs."""
    from bench_pairs import render

    body = render(data["rows"], data["backbone"], data["pairs"], data["budget_s"], data["machine"], heading=False)
    return "\n".join([body, _source_line(path, data, data.get("command") or "python benchmarks/bench_pairs.py")])


def integrity(data: dict, path: str) -> str:
    """Raw frames lost / altered in a long fast acquisition with a slow display model."""
    from bench_integrity import render

    return "\n".join([render(data, heading=False), _source_line(path, data, data.get("command")
                                                                  or "python benchmarks/bench_integrity.py")])


def attach(data: dict, path: str) -> str:
    """What attaching livedenoise to the user's own acquisition costs it, and raw frames lost / altered."""
    from bench_attach import render

    return "\n".join([render(data, heading=False), _source_line(path, data, data.get("command")
                                                                  or "python benchmarks/bench_attach.py")])


def calibration(data: dict, path: str) -> str:
    """A camera calibration's maps: the output with the fixed pattern put back or not, network and VST+BM3D."""
    from bench_calibration import render

    return "\n".join([render(data, heading=False), _source_line(path, data, data.get("command")
                                                                  or "python benchmarks/bench_calibration.py")])


def adapt_sim(data: dict, path: str) -> str:
    """`--adapt self` on the simulator: backbone, fine-tune and the SURE check's choice against the known sample."""
    from bench_adapt_sim import render

    return "\n".join([render(data, heading=False), _source_line(path, data, data["command"])])


def temporal(data: dict, path: str) -> str:
    """The temporal backbone beside the 2-D one, VST+BM3D and VST+BM4D on simulated time-lapses."""
    from bench_temporal import render

    return "\n".join([render(data, heading=False), _source_line(path, data, data.get("command")
                                                                  or "python benchmarks/bench_temporal.py")])


def temporals(sources: list[tuple[dict, str]]) -> str:
    """Several runs of the temporal benchmark (the simulator's time-lapses, the real-structure ones), one table each."""
    return "\n\n".join(temporal(data, path) for data, path in sources)


def live_backbones(sources: list[tuple[dict, str]]) -> str:
    """Live sessions (``bench_live.py``) of each backbone, with the references' fixed pattern removed or kept."""
    from bench_live import render

    parts = []
    for data, _ in sources:
        what = ("calibration references with the camera's fixed pattern removed (the default)"
                if data.get("fixed_pattern_removed", True) else
                "calibration references keeping the camera's fixed pattern (`[live] remove_fixed_pattern = false`)")
        # runs before the temporal second pass existed ran `temporal` as the fusion alone; every run since records
        # the commits it ran (`commits`, bench_live.py since 2026-12-05), and the runs between time temporal-fusion
        means = data.get("means", {})
        second = "temporal-fusion" in means or "commits" in data
        if not second:
            what += ", an earlier release: `temporal` is the fusion alone"
        elif "temporal-fusion" in means:
            what += ", `temporal` with its second pass, `temporal-fusion` without it"
        else:
            what += ", temporal backbones with their second pass"
        parts += [f"**{what}**", "", render(data), ""]
    return "\n".join([*parts, "PSNR dB against the sample (the simulator's truth without the camera's fixed pattern); "
                      "*shown*: every 5th frame the viewer showed, before the swap (backbone) and after it (adapted); "
                      "*single*: 8 live frames, each denoised on its own (a temporal model's 2-D stage); latency and "
                      "rates of the display; means over the sessions.", "", _sources_line(sources)])


def live_priority(data: dict, path: str) -> str:
    """Live sessions of this checkout against an earlier one (``bench_live.py --checkout``): display rate, latency,
    fine-tune steps."""
    from bench_live import render

    what = _live_sessions_line(data, "rows `@ {label}`: the same sessions with the livedenoise of the commit before "
                                     "this change, interleaved") + "."
    return "\n".join([what, "", render(data), "", _source_line(path, data, data.get("command", "bench_live.py"))])


def _checkout_lines(data: dict, per_label: str) -> str:
    """``per_label`` for each ``--checkout`` of a ``bench_live.py`` run, each after "; "."""
    labels = sorted({r["backbone"].split(" @ ", 1)[1] for r in data.get("runs", []) if " @ " in r["backbone"]})
    return "".join("; " + per_label.format(label=label) for label in labels)


def _live_sessions_line(data: dict, per_label: str) -> str:
    """What ``bench_live.py`` ran: the demo's options and interval, then ``per_label`` for each ``--checkout``."""
    settings = " ".join(data.get("demo_args") or [])
    interval = data.get("interval_ms")
    return (f"`livedenoise demo {settings}`" + (f", a frame every {interval:g} ms" if interval else "")
            + _checkout_lines(data, per_label))


def train_bf16(data: dict, path: str) -> str:
    """Self-supervised fine-tuning in fp32 and bf16 (``bench_speed.py --train-precisions``): steps per second and
    the held-out loss reached (validations are fp32 in both)."""
    rows = [[r["precision"], f"{r['size']}²", f"{r['wall_s']:.1f}", str(r["steps"]), f"{r['steps'] / r['wall_s']:.1f}",
             r["stopped"], str(r["best_step"]), f"{r['initial_val_loss']:.5f} → {r['best_val_loss']:.5f}"]
            for r in data["finetune"]]
    return "\n".join([_table(["training precision", "frame", "wall s", "steps", "steps / s", "stopped", "best step",
                               "held-out loss"], rows), "",
                      _source_line(path, data, data.get("command", "bench_speed.py"))])


def train_layers(data: dict, path: str) -> str:
    """Self-supervised fine-tuning by training precision and weights changed (``bench_speed.py --train-precisions
    --adapt-layers``): steps per second against the run's first row, and the PSNR against the simulator's truth of the
    fine-tuned frame denoised by the backbone (its noise model fitted to the frame) and by the result."""
    runs = [r for r in data["finetune"] if "psnr" in r]
    if not runs:
        raise TablesError("train-layers: the run has no fine-tune scored against the truth (bench_speed.py before "
                          "2026-12-05)")
    base = runs[0]["steps"] / runs[0]["wall_s"]
    rows = [[r["precision"], r.get("adapt_layers", "all"), f"{r['size']}²", f"{r['wall_s']:.1f}", str(r["steps"]),
             f"{r['steps'] / r['wall_s']:.1f} ({r['steps'] / r['wall_s'] / base:.2f}×)", r["stopped"].replace("_", " "),
             f"{r['initial_val_loss']:.5f} → {r['best_val_loss']:.5f}",
             f"{r['psnr']['backbone']:.2f} → {r['psnr']['fine-tuned']:.2f}",
             (f"{r['psnr']['backbone with pattern']:.2f} → {r['psnr']['fine-tuned with pattern']:.2f}"
              if "backbone with pattern" in r["psnr"] else "-"),
             {True: "yes", False: "no (backbone kept)"}.get(r.get("adapted"), "-")] for r in runs]
    return "\n".join([_table(["training precision", "weights changed", "frame", "wall s", "steps", "steps / s",
                               "stopped", "held-out loss", "PSNR: backbone → fine-tuned",
                               "PSNR with the camera's pattern", "weights adapted"], rows), "",
                      _source_line(path, data, data.get("command", "bench_speed.py"))])


def train_speed(sources: list[tuple[dict, str]], now: str = "this change") -> str:
    """Self-supervised fine-tuning of an earlier commit (``speed_of_checkout.py --section finetune``) and of this one
    (``bench_speed.py --only finetune``; ``now`` names it), alternated: steps per second against the earlier commit's
    fp32 fine-tune of every weight in the same round, and what the steps bought (held-out loss; PSNR against the
    simulator's truth)."""
    rows, base, rounds = [], None, 0
    for data, _ in sources:
        rounds += bool(data.get("commit"))
        code = f"{rounds}: " + (f"before ({data['commit'][:7]})" if data.get("commit") else now)
        for r in data["finetune"]:
            rate = r["steps"] / r["wall_s"]
            if data.get("commit") and r["precision"] == "fp32" and r.get("adapt_layers", "all") == "all":
                base = rate
            if base is None:
                raise TablesError("train-speed: each round must start with the earlier commit's fp32 fine-tune of "
                                  "every weight")
            rows.append([code, r["precision"], r.get("adapt_layers", "all"), f"{r['wall_s']:.1f}", str(r["steps"]),
                         f"{rate:.1f} ({rate / base:.2f}×)", r["stopped"].replace("_", " "),
                         f"{r['initial_val_loss']:.5f} → {r['best_val_loss']:.5f}",
                         f"{r['psnr']['backbone']:.2f} → {r['psnr']['fine-tuned']:.2f}",
                         {True: "yes", False: "no (backbone kept)"}.get(r.get("adapted"), "-")])
    return "\n".join([_table(["round: code", "training precision", "weights changed", "wall s", "steps",
                               "steps / s (× before, fp32, all)", "stopped", "held-out loss",
                               "PSNR: backbone → fine-tuned", "weights adapted"], rows), "",
                      _sources_line(sources)])


def live_phases(sources: list[tuple[dict, str]]) -> str:
    """Live sessions (``livedenoise demo`` report.json) by phase: the display while the calibration fine-tune shares
    the CPU, and after it has ended."""
    rows = []
    for data, _ in sources:
        s = data.get("session")
        if not s:
            raise TablesError("live-phases: the report has no 'session' record (livedenoise demo before 2026-12-05)")
        ft = data.get("finetune") or {}
        for name, p in (data.get("display_phases") or {}).items():
            compiled = "yes" if data.get("compiled") else "no"  # reports from before the option have no field
            rows.append([s["backbone"], data.get("precision", "-"), compiled, s["roi"], f"{1000 / s['interval_ms']:g}",
                         str(s["frames_after_swap"]), name, f"{p['seconds']:.1f}", f"{p['camera_fps']:.1f}",
                         f"{p['denoised_fps']:.1f}", str(p["frames_dropped"]), _num(p["mean_latency_ms"], ".0f"),
                         f"{ft.get('steps', '-')} in {_num(ft.get('elapsed_s'), '.1f')} s",
                         f"{data['frames_written']} of {data['frames_acquired']}"])
    return "\n".join([_table(["backbone", "precision", "compiled", "frame", "camera fps (set)", "frames after swap",
                               "phase", "seconds", "camera fps", "display fps", "skipped", "mean latency ms",
                               "fine-tune steps", "denoised frames recorded"], rows), "",
                      _sources_line(sources)])


def temporal_pairs(sources: list[tuple[dict, str]]) -> str:
    """The temporal backbone fine-tuned on 5 pairs: references as averaged, with a camera calibration, or with the
    fixed pattern removed across the fields (``bench_temporal_pairs.py``)."""
    rows = []
    for data, _ in sources:
        what = ("camera calibration" if data.get("calibration") else
                "fixed pattern removed" if data.get("fixed_pattern") else "references as averaged")
        if any(c.get("second_pass_stage") == "backbone" for c in data["cases"]):
            what += "; second pass on the backbone's 2-D stage"
        for c in data["cases"]:
            sc = c["scores"]
            rows.append([what, c["case"], str(c["steps"]),
                         f"{sc['temporal batch']['psnr']:.2f} / {sc['temporal batch']['ssim']:.3f}",
                         f"{sc['adapted batch']['psnr']:.2f} / {sc['adapted batch']['ssim']:.3f}",
                         f"{sc['adapted live']['psnr'] - sc['temporal live']['psnr']:+.2f}",
                         f"{sc['adapted batch']['psnr'] - sc['temporal batch']['psnr']:+.2f}"])
    return "\n".join([_table(["references", "case", "fine-tune steps", "temporal backbone (batch)", "adapted (batch)",
                              "gain live", "gain batch"], rows), "",
                      "5 pairs at other fields, each reference the mean of 16 frames, 60 s fine-tune; PSNR dB / SSIM "
                      "against the sample on 16-frame time-lapses of 256² (the backbone and the adapted model each "
                      "with the same noise model: fitted to the stack, or from the camera calibration).", "",
                      _sources_line(sources)])


def pairs_shift(sources: list[tuple[dict, str]]) -> str:
    """Few-pair fine-tuning where the sample matches the backbones' training and where it does not (a PSF sharper
    than any in their bank), with the microscope's references and with noise-free ones (the ceiling);
    ``bench_temporal_pairs.py --with-2d``, both models fine-tuned on the same 5 pairs."""
    rows = []
    first = sources[0][0]
    for data, _ in sources:
        psf = data.get("psf_sigma")
        sample = f"PSF {psf:g} px (never trained on)" if psf is not None else "PSF 1 px (as trained)"
        refs = ("noise-free sample (ceiling)" if data.get("reference") == "exact" else
                "16-frame means, fixed pattern removed" if data.get("fixed_pattern") else "16-frame means")
        for c in data["cases"]:
            sc = c["scores"]
            photons = c["case"].split(" ph")[0] + " ph"
            models = [("2-D fast, frame by frame", "2-D fast", "2-D fast adapted", c.get("fit_2d") or {}),
                      ("temporal, live", "temporal live", "adapted live", c),
                      ("temporal, batch", "temporal batch", "adapted batch", c)]
            for label, base, adapted, fit in models:
                if adapted not in sc:
                    continue
                b, a = sc[base], sc[adapted]
                rows.append([sample, refs, photons, label, str(fit.get("steps", "-")),
                             f"{b['psnr']:.2f} / {b['ssim']:.3f}", f"{a['psnr']:.2f} / {a['ssim']:.3f}",
                             f"{a['psnr'] - b['psnr']:+.2f}", f"{b['psnr_moving']:.2f} → {a['psnr_moving']:.2f}"])
    return "\n".join([_table(["sample", "references", "photons", "model", "fine-tune steps", "backbone",
                              "adapted", "gain", "moving puncta: backbone → adapted"], rows), "",
                      f"{first.get('pairs')} pairs at other fields of the same sample, a {first.get('budget_s'):g} s "
                      "fine-tune of each model; the temporal model's fine-tune changes only its 2-D stage, the fast "
                      "network, so the two are the same fit on the same pairs and seed (same steps unless the time "
                      "budget cuts them). PSNR dB / SSIM against the sample on 16-frame time-lapses of 256², each "
                      "model with the stack's noise fit. A fine-tune that kept its backbone "
                      "scores as the backbone.", "",
                      _sources_line(sources)])


def acquisition_overhead(sources: list[tuple[dict, str]]) -> str:
    """The livedenoise hook's cost to a free-running acquisition, plain and hooked runs alternating
    (``bench_speed.py --only acquisition --acq-rounds N``), per number of live events per pycromanager call."""
    from bench_speed import PLAIN_MODE, acquisition_summary

    rows = []
    for data, path in sources:
        chunk = data.get("live_chunk_frames") or int(re.search(r"chunk(\d+)", path).group(1))  # type: ignore[union-attr]
        summary = {s["mode"]: s for s in acquisition_summary(data["acquisition"])}
        plain = summary[PLAIN_MODE]
        for mode, s in summary.items():
            if mode == plain["mode"]:
                continue
            rows.append([str(chunk), mode, str(s["rounds"]), f"{plain['median_fps']:.1f}", f"{s['median_fps']:.1f}",
                         f"{100 * s['median_ratio']:.1f}%", f"{100 * s['min_ratio']:.0f}–{100 * s['max_ratio']:.0f}%"])
    return "\n".join([_table(["live frames per pycromanager call", "mode", "rounds", "plain fps (median)",
                              "hooked fps (median)", "hooked / plain (median of rounds)", "range over rounds"], rows),
                      "", f"{sources[0][0]['acquisition'][0]['frames']} frames of {sources[0][0]['acq_size']}² "
                      "per run, NDTiff written, the simulated camera free-running (no interval); in each round "
                      "the plain and hooked runs follow each other, in alternating order.", "",
                      _sources_line(sources)])


def demo(data: dict, path: str) -> str:
    """The quick start's example output, from a committed ``report.json`` of ``livedenoise demo``."""
    from livedenoise.commands.demo import summary_lines

    return "\n".join(["```", *summary_lines(data), "```", "",
                      _source_line(path, data, "livedenoise demo, which bash .ci/quickstart demo runs")])


def stages(data: dict, path: str) -> str:
    """How a shipped backbone was trained, stage by stage, from the metadata inside its weights file."""
    t = data.get("training") or {}
    body = []
    for i, st in enumerate(t.get("stages") or [], 1):
        d = st.get("data") or {}
        source = d.get("source", "?")
        if source == "synthetic":
            what = (f"synthetic: {d.get('n')} fields of {d.get('size')}² (seed {d.get('seed')}; held out: "
                    f"{', '.join(d.get('held_out') or []) or 'none'})")
        elif source == "simulator":
            what = f"simulated pairs (first release): {d.get('train_pairs')} images of {d.get('size')}²"
        elif not d and st.get("note"):  # a step that changed the network without training it (grown, built on)
            what = str(st["note"])
        else:
            what = str(source)
        lr = st.get("lr")
        rate = (_num(lr, "g") + (f" ({st['schedule']})" if st.get("schedule", "constant") != "constant" else "")
                if lr is not None else "-")
        where = (f"{str(st.get('device', 'cpu')).split(':')[0]}, {st['batch_size']}×{st['patch_size']}²"
                 if st.get("batch_size") else "-")
        val = (f"{_num(st.get('initial_val_loss'), '.3g')} → {_num(st.get('best_val_loss'), '.3g')}"
               if st.get("best_val_loss") is not None else "-")
        body.append([str(i), what, where, rate, str(st.get("steps", "-")),
                     _num(st.get("elapsed_s") / 60 if st.get("elapsed_s") else None, ".0f"),
                     str(st.get("best_step", "-")), val])
    table = _table(["stage", "data", "device, batch", "lr", "steps", "minutes", "best step", "validation loss"], body)
    return "\n".join([table, "", f"{t.get('total_steps')} steps in all. *Generated by "
                      f"`python benchmarks/readme_tables.py` from the metadata of `{path.replace('../../', '')}` "
                      "(each stage's own validation set; losses of different stages are not comparable).*"])


def pareto(sources: list[tuple[dict, str]]) -> str:
    """Quality against time per frame: every candidate of a backbone run (dev pairs, simulator, beside VST+BM3D)
    with its CPU time from a speed run (``bench_speed.py --only inference``), fastest first."""
    from bench_backbone import overall_means

    (quality, _), (speed, _) = sources
    means = overall_means(quality)
    ms = {(r["model"], r["size"]): r["ms_per_frame"] for r in speed.get("inference") or [] if r["device"] == "cpu"}
    bm3d = means["vst+bm3d"]
    body = []
    for label, info in sorted(quality["models"].items(), key=lambda kv: ms.get((kv[0], 512), math.inf)):
        m = means[label]
        body.append([f"`{label}`", str(info.get("total_steps", "-")), _num(ms.get((label, 512)), ".0f"),
                     _num(ms.get((label, 2048)), ".0f"), f"{m['dev']:.2f}", f"{m['dev'] - bm3d['dev']:+.2f}",
                     f"{m['sim']:.2f}", f"{m['sim'] - bm3d['sim']:+.2f}"])
    body.append(["VST+BM3D", "-", _num(1000 * quality.get("bm3d_seconds_per_image", math.nan), ".0f") + "*", "-",
                 f"{bm3d['dev']:.2f}", "", f"{bm3d['sim']:.2f}", ""])
    header = ["model", "training steps", "ms / 512² frame", "ms / 2048² frame", "dev pairs (dB)", "Δ vs VST+BM3D",
              "simulator (dB)", "Δ vs VST+BM3D"]
    note = ("(Dev pairs: mean over the sets without `nucleus_migration`; simulator: mean over photon levels and "
            "optics against the sample. ms: `Denoiser.denoise` on the CPU, median, 2 threads. \\* BM3D's time is "
            "its seconds per dev or simulated image in the quality run, one thread, not per 512² frame.)")
    return "\n".join([_table(header, body), "", note, "", _sources_line(sources)])


def pairs_lr(sources: list[tuple[dict, str]]) -> str:
    """Few-pair fine-tuning at several learning rates (one committed run each): overall gain and steps."""
    body = []
    for data, _ in sorted(sources, key=lambda dp: -(dp[0].get("lr") or 1e-3)):
        rows = data["rows"]
        gain = [r["fine-tuned"] - r["backbone"] for r in rows]
        body.append([_num(data.get("lr") or 1e-3, "g"), str(len(rows)),
                     _num(sum(r["backbone"] for r in rows) / len(rows), ".2f"),
                     _num(sum(r["fine-tuned"] for r in rows) / len(rows), ".2f"), _num(sum(gain) / len(gain), "+.2f"),
                     _num(min(gain), "+.2f"), _num(sum(r["steps"] for r in rows) / len(rows), ".0f")])
    return "\n".join([_table(["lr", "folds", "backbone", "fine-tuned", "mean gain", "worst fold", "steps"], body), "",
                      _sources_line(sources)])


def pairs_layers(sources: list[tuple[dict, str]]) -> str:
    """Few-pair fine-tuning changing all weights or only some (``adapt_layers``), each a committed run: the same
    held-out folds, so the per-fold difference to the first source is also given; how many fits the time budget
    stopped (the others stopped early), and steps per second of fitting (steps over the fits' wall time)."""
    first = {(r["set"], r["held_out"]): r["fine-tuned"] - r["backbone"] for r in sources[0][0]["rows"]}
    body = []
    for data, _ in sources:
        rows = data["rows"]
        gain = [r["fine-tuned"] - r["backbone"] for r in rows]
        delta = [r["fine-tuned"] - r["backbone"] - first[(r["set"], r["held_out"])] for r in rows]
        mean_delta = sum(delta) / len(delta)
        sem = (sum((d - mean_delta) ** 2 for d in delta) / max(len(delta) - 1, 1) / len(delta)) ** 0.5
        budget = sum(r.get("stopped") == "time_budget" for r in rows)
        seconds = sum(r.get("fit_seconds") or 0.0 for r in rows)
        body.append([str(data.get("adapt_layers", "all")), _num(data.get("lr"), "g"), str(data.get("patience")),
                     str(len(rows)), _num(sum(r["backbone"] for r in rows) / len(rows), ".2f"),
                     _num(sum(r["fine-tuned"] for r in rows) / len(rows), ".2f"), _num(sum(gain) / len(gain), "+.2f"),
                     _num(min(gain), "+.2f"), f"{mean_delta:+.3f} ± {sem:.3f}",
                     _num(sum(r["steps"] for r in rows) / len(rows), ".0f"), f"{budget}/{len(rows)}",
                     _num(sum(r["steps"] for r in rows) / seconds if seconds else None, ".1f")])
    header = ["weights changed", "lr", "patience", "folds", "backbone", "fine-tuned", "mean gain", "worst fold",
              "vs. first row (± s.e.)", "steps", "stopped by the budget", "steps / s"]
    budget_s = sorted({f"{data['budget_s']:g} s" for data, _ in sources if data.get("budget_s")})
    why = {"early_stop": "early stopping (*patience* validations without a lower held-out loss)"}
    others = sorted({str(r.get("stopped")) for data, _ in sources for r in data["rows"]} - {"time_budget"})
    note = (f"(Stopped by the budget: fits that ran out of the time budget ({', '.join(budget_s) or '?'} per "
            f"fine-tune); the others ended by {', '.join(why.get(o, o) for o in others) or '-'}. Steps / s: the row's "
            "steps over its fits' wall time, validation included.)")
    return "\n".join([_table(header, body), "", note, "", _sources_line(sources)])


def adapt(sources: list[tuple[dict, str]]) -> str:
    """`--adapt self` on one image: every objective and learning rate tried, per set and mean, from committed runs."""
    from bench_adapt import EXCLUDED_FROM_MEAN, layers_of

    rows = [{**r, "criterion": data.get("criterion", "the objective's held-out loss"),
             "objective": r["objective"] if layers_of(r) == "all" else f"{r['objective']} ({layers_of(r)})"}
            for data, _ in sources for r in data["rows"]]
    variants = list(dict.fromkeys((r["objective"], r["lr"], r["criterion"]) for r in rows))
    sets = list(dict.fromkeys(r["set"] for r in rows))
    header = ["objective", "lr", "kept when"] + [s.replace("_", " ") for s in sets] + ["mean gain", "mean steps"]
    body = []
    base = {r["set"]: r["backbone"] for r in rows}
    body.append(["backbone alone", "-", "-"] + [_num(base[s], ".2f") for s in sets] + ["-", "-"])
    bm3d = {r["set"]: r["vst+bm3d"] for r in rows}
    body.append(["VST+BM3D", "-", "-"] + [_num(bm3d[s], ".2f") for s in sets] + ["-", "-"])
    for obj, lr, crit in variants:
        sel = {r["set"]: r for r in rows if (r["objective"], r["lr"], r["criterion"]) == (obj, lr, crit)}
        counted = [sel[s] for s in sets if s in sel and s not in EXCLUDED_FROM_MEAN]  # the same sets for both means
        body.append([obj, _num(lr, "g"), crit]
                    + [_num(sel[s]["chosen"] - sel[s]["backbone"], "+.2f") if s in sel else "-" for s in sets]
                    + [_num(sum(r["chosen"] - r["backbone"] for r in counted) / len(counted), "+.2f"),
                       _num(sum(r["steps"] for r in counted) / len(counted), ".0f")])
    left_out = ", ".join(f"`{s}`" for s in EXCLUDED_FROM_MEAN)
    note = (f"(Mean gain and mean steps: over every set but {left_out}, the same sets for both; a set whose fine-tune "
            "was skipped counts 0 steps and +0.00 dB.)")
    return "\n".join([_table(header, body), "", note, "", _sources_line(sources)])


def noise_fit(sources: list[tuple[dict, str]]) -> str:
    """The single-image noise fit before and after a change: the same dev-pairs command at two commits.

    Overall PSNR per method, every pair whose PSNR moved by 0.1 dB or more under any method, and how many
    results failed the residual check.
    """
    (before, _), (after, _) = sources
    commit = lambda d: (d.get("machine", {}).get("git") or {}).get("commit", "?")[:7]  # noqa: E731
    key = lambda r: (r["set"], r["pair"], r["method"])  # noqa: E731
    b_rows, a_rows = {key(r): r for r in before["rows"]}, {key(r): r for r in after["rows"]}
    if set(b_rows) != set(a_rows):
        raise TablesError("the before and after noise-fit runs scored different pairs or methods")
    methods = [o["method"] for o in after["overall"] if o["method"] != "raw"]
    b_all, a_all = ({o["method"]: o for o in d["overall"]} for d in (before, after))
    overall = [[m, _num(b_all[m]["psnr"], ".2f"), _num(a_all[m]["psnr"], ".2f"),
                _num(a_all[m]["psnr"] - b_all[m]["psnr"], "+.2f")] for m in methods]
    moved = sorted({k[:2] for k in a_rows if abs(a_rows[k]["psnr"] - b_rows[k]["psnr"]) >= 0.1})
    per_pair = [[f"{s}/{p}"] + [f"{b_rows[(s, p, m)]['psnr']:.2f} → {a_rows[(s, p, m)]['psnr']:.2f}" for m in methods]
                for s, p in moved]
    failed = lambda d: sum(any("not consistent with the noise model" in w for w in r.get("warnings") or [])  # noqa: E731
                           for r in d["rows"])
    return "\n".join([
        f"Overall (mean over sets; PSNR dB), before = commit `{commit(before)}`, after = commit `{commit(after)}`:", "",
        _table(["method", "before", "after", "change"], overall), "",
        "Pairs whose PSNR moved by 0.1 dB or more (every other pair moved by less):", "",
        _table(["pair", *methods], per_pair), "",
        f"Results failing the residual check: {failed(before)} before, {failed(after)} after.", "",
        _sources_line(sources)])


def batch_malloc(sources: list[tuple[dict, str]]) -> str:
    """Batch jobs with freed memory kept within a block and with malloc's own settings, one table per run."""
    from bench_batch import render

    return "\n\n".join(render(data).strip() for data, _ in sources) + "\n\n" + _sources_line(sources)


def _sources_line(sources: list[tuple[dict, str]]) -> str:
    parts = [f"`benchmarks/results/{path}` (`{data.get('command') or (data.get('config') or {}).get('command')}`)"
             for data, path in sources]
    m = sources[0][0].get("machine") or {}
    loads = [d["machine"]["load_average"][0] for d, _ in sources if (d.get("machine") or {}).get("load_average")]
    runs = [d["machine"] for d, _ in sources if d.get("machine")]
    return (f"*Generated by `python benchmarks/readme_tables.py` from {'; '.join(parts)}; "
            f"{_machine(m, loads, runs)}.*")


#: Blocks made from several committed result files (an ablation run as separate commands).
def live_display_first(data: dict, path: str) -> str:
    """Live sessions of this checkout against an earlier one, each session's display by phase and its fine-tune
    (``bench_live.py --checkout``, README "The display comes first")."""
    from bench_live import render_phases

    what = (_live_sessions_line(data, "sessions `@ {label}`: the livedenoise of the commit before this change, "
                                      "interleaved") + "; one row per session, in the order they ran.")
    return "\n".join([what, "", render_phases(data), "",
                      _source_line(path, data, data.get("command", "bench_live.py"))])


def recorded_window(data: dict, path: str) -> str:
    """Live sessions of a temporal backbone recording centred or causal windows (``bench_live.py
    --recorded-windows``, README "Recorded frames of a temporal backbone")."""
    from bench_live import render_recorded

    before = "sessions `@ {label}`: the livedenoise of the commit before this change, interleaved"
    what = ((_live_sessions_line(data, before) if data.get("demo_args") else
             "`livedenoise demo` with the quick start's settings (256², a frame every 100 ms)"
             + _checkout_lines(data, before))
            + "; one row per session, in the order they ran; *recorded*: every 5th "
            "denoised frame saved, PSNR dB against the simulator's ground truth, as *shown* for the frames the viewer "
            "showed.")
    return "\n".join([what, "", render_recorded(data), "",
                      _source_line(path, data, data.get("command", "bench_live.py"))])


def recorder_cores(sources: list[tuple[dict, str]]) -> str:
    """Several ``bench_live.py`` runs' sessions, one table each: what was recorded and displayed, and the recorder's
    tail (the recorder with every core at the end against the commit before; the options the advice names)."""
    parts = []
    for data, path in sources:
        parts += [recorded_window(data, path), ""]
    return "\n".join(parts).rstrip()


def display_ways(sources: list[tuple[dict, str]]) -> str:
    """``bench_live.py`` sessions of the temporal backbone with its display always in two passes, always in one, and
    chosen as measured (``--one-pass auto``): what was shown, how, and what it cost; one row per session."""
    ways = {"temporal-two-passes": "two passes (`--one-pass off`)", "temporal-one-pass": "one pass (`--one-pass`)",
            "temporal-auto": "**auto** (the default)"}
    rows = []
    for data, _ in sources:
        args = list(data.get("demo_args") or [])
        option = {k: v for k, v in pairwise(args) if k.startswith("--")}
        session = f"{option.get('--roi', '256x256').replace('x', '×')}, {option.get('--precision', 'fp32')}"
        for r in data["runs"]:
            passes = r.get("display_passes") or {}
            switches = passes.get("switches") or []
            said = ", ".join(f"{s['to']} from frame {s['frame']}" for s in switches) or "-"
            base, _, label = r["backbone"].partition(" @ ")  # "temporal-auto @ before": another checkout's session
            shares = r.get("finetune_display_skipped")  # the display's skipped share per window the waits judged
            judged = (f"; display skipped {', '.join(f'{100 * s:.0f}' for s in shares)} % in its windows"
                      if shares else "")
            rows.append([session, ways.get(base, f"`{base}`") + (f" @ {label}" if label else ""),
                         f"{r['display_fps']:.1f}",
                         f"{r['skipped']}",
                         f"{r['latency_ms']:.0f}", _num(r["display_backbone"], ".2f"),
                         f"{passes.get('two passes', 0)} / {passes.get('one pass', 0)}", said,
                         f"{r['steps']} in {r['finetune_elapsed_s']:.0f} s, waited {r['finetune_paused_s']:.1f} s"
                         + {True: ", then stopped waiting", False: "", None: ""}[r.get("finetune_stopped_waiting")]
                         + judged,
                         _num(r.get("recorded_backbone"), ".2f"), f"{r.get('recorder_tail_s') or 0.0:.0f}"])
    return "\n".join([_table(["session", "display", "display fps", "skipped", "latency ms", "as displayed dB",
                                "frames in two passes / one pass", "switched to", "fine-tune steps",
                                "recorded dB", "recording after the camera s"], rows), "", _sources_line(sources)])


def recorder_backlog(sources: list[tuple[dict, str]]) -> str:
    """``bench_recorder_backlog.py`` runs, one table: an attached recorder far behind the camera, memory and hand-over
    time with its backlog parked on disk against the commit before (all in memory)."""
    from bench_recorder_backlog import render

    data = {"runs": [r for d, _ in sources for r in d["runs"]]}
    parts = [f"`{d['command']}`" for d, _ in sources]
    paths = [f"`benchmarks/results/{p}`" for _, p in sources]
    machines = [d["machine"] for d, _ in sources]
    loads = [m["load_average"][0] for m in machines if m.get("load_average")]
    return "\n".join([render(data), "", f"*Generated by `python benchmarks/readme_tables.py` from "
                      f"{'; '.join(f'{p} ({c})' for p, c in zip(paths, parts, strict=True))}; "
                      f"{_machine(machines[0], loads, machines)}.*"])


MULTI = {"pairs-lr": pairs_lr, "pairs-layers": pairs_layers, "pairs-layers-quick": pairs_layers, "adapt": adapt,
         "adapt-layers": adapt, "adapt-layers-gpu-backbone": adapt, "noise-fit": noise_fit,
         "live-backbones": live_backbones, "live-temporal-lite": live_backbones,
         "temporal-pairs": temporal_pairs, "pareto": pareto, "batch-malloc": batch_malloc, "batch-bf16": batch_malloc,
         "train-speed": train_speed, "train-speed-vs-issue": partial(train_speed, now="bbe160f"),
         "batch-xeon": batch_malloc, "live-phases-xeon": live_phases,
         "compile-batch-xeon": batch_malloc, "pairs-shift": pairs_shift,
         "acquisition-overhead": acquisition_overhead, "recorder-cores": recorder_cores,
         "advice-512": recorder_cores, "recorder-backlog": recorder_backlog, "temporal-one-pass": temporals,
         "temporal-lite-one-pass": temporals, "live-one-pass-512": recorder_cores,
         "live-one-pass-256": recorder_cores, "live-auto": display_ways,
         "live-auto-afresh": display_ways, "live-auto-more": display_ways, "live-give-up-512": display_ways}

RENDERERS: dict[str, Callable] = {
    "sim-sweep": sim_sweep, "sim-averages": sim_averages, "peers": peers, "dev-pairs": dev_pairs,
    "stages": stages, "stages-standard": stages, "stages-lite": stages, "speed-gpu": speed_gpu,
    "speed-temporal-lite": speed_cpu, "speed-one-pass": speed_cpu, "temporal-lite": temporal, "temporal-real": temporal,
    "backbones": backbones, "pairs": pairs,
    "demo": demo, "integrity": integrity, "live-priority": live_priority, "live-bf16-finetune": live_priority,
    "live-display-first": live_display_first, "live-give-up-fast": live_display_first,
    "recorded-window": recorded_window,
    "recorded-window-512": recorded_window,
    "train-bf16": train_bf16, "train-layers": train_layers, "compile-speed-xeon": compile_speed,
    "temporal": temporal, "attach": attach, "calibration": calibration, "adapt-sim": adapt_sim,
    "adapt-sim-psf03": adapt_sim,
    "precision": precision, "roofline": roofline, "precision-xeon": precision, "roofline-xeon": roofline,
    "runtimes": runtimes, "foreign-processing": foreign_processing,
    "allocator": allocator,
    "allocator-models": allocator,
    "motion-noise": motion_noise, **MULTI,
}


# ---------------------------------------------------------------------------------------------
# README rewriting
# ---------------------------------------------------------------------------------------------
def generate(name: str, results: Path = RESULTS) -> str:
    """The Markdown of block ``name`` from its committed source file."""
    if name not in RENDERERS:
        raise TablesError(f"README block {name!r} has no generator; known: {', '.join(RENDERERS)}")
    if name in MULTI:
        loaded = []
        for rel in SOURCES[name]:
            try:
                loaded.append((json.loads((results / rel).read_text()), rel))
            except Exception as exc:  # noqa: BLE001
                raise TablesError(f"{results / rel}: cannot read a result file of block {name!r} ({exc})") from exc
        return MULTI[name](loaded).strip() + "\n"
    src = results / SOURCES[name]
    try:
        if src.suffix == ".safetensors":  # a shipped checkpoint: its JSON metadata (never its weights)
            from livedenoise.checkpoint import read_metadata

            data = read_metadata(src)
        else:
            data = json.loads(src.read_text())
    except Exception as exc:  # noqa: BLE001 - any unreadable source is one message naming the file
        raise TablesError(f"{src}: cannot read the result file of block {name!r} ({exc})") from exc
    return RENDERERS[name](data, SOURCES[name]).strip() + "\n"


def render_readme(text: str, results: Path = RESULTS) -> str:
    """``text`` with every marked block regenerated; every generator's block must be present."""
    found = [m.group("name") for m in BLOCK.finditer(text)]
    missing = [n for n in RENDERERS if n not in found]
    if missing:
        raise TablesError(f"README has no block for {', '.join(missing)} (<!-- results:begin NAME --> ... "
                          "<!-- results:end NAME -->)")
    if len(found) != len(set(found)):
        raise TablesError(f"README has a block twice: {', '.join(sorted(n for n in found if found.count(n) > 1))}")
    opened = re.findall(r"<!-- results:begin ([\w-]+) -->", text)
    if sorted(opened) != sorted(found):
        raise TablesError(f"README has an unterminated block: {', '.join(sorted(set(opened) - set(found)))}")
    cache: dict[str, str] = {}

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in cache:
            cache[name] = generate(name, results)
        return m.group(1) + cache[name] + m.group(4)

    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when README.md differs")
    ap.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    ap.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    old = args.readme.read_text()
    try:
        new = render_readme(old, args.results)
    except TablesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if new == old:
        print(f"{args.readme}: results tables are up to date")
        return 0
    if args.check:
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), "README.md", "generated", lineterm="", n=1)
        print(f"{args.readme}: results tables differ from the committed result files; run "
              "`python benchmarks/readme_tables.py` and commit README.md:")
        print("\n".join(list(diff)[:80]))
        return 1
    args.readme.write_text(new)
    print(f"{args.readme}: results tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
