"""Write an evaluation's report: ``report.md`` (tables), ``results.json``/``results.csv`` (every score), PNG plots.

Aggregation, and why: each seed is one rerun of the whole experiment (new fields, new noise, new
training randomness), so scores are first averaged over the test images of a seed, then the mean
and the standard deviation *across seeds* are reported. That standard deviation is the rerun
stability the papers show as error bars (it is 0 / "-" with one seed).
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from livedenoise.evaluate.experiments import EXPERIMENT_TITLES, METHOD_DESCRIPTIONS
from livedenoise.evaluate.machine import describe_machine

if TYPE_CHECKING:  # pragma: no cover
    from livedenoise.evaluate.result import EvalResult

METRIC_LABELS = {"mse": "MSE", "psnr": "PSNR (dB)", "ssim": "SSIM", "frc": "mean FRC"}
PLOT_METRICS = ("mse", "ssim", "frc")


# ---------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------
def _finite_mean(values: Iterable[float | None]) -> float:
    v = np.asarray([x for x in values if x is not None], np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


#: Label suffixes of trained rows whose fit did not change the network: such a row is the starting
#: network (the backbone, or an untrained one for scratch), never a trained result.
NOT_TRAINED = " [0 steps: not trained]"
KEPT_INITIAL = " [initial weights kept]"


def method_label(row: dict) -> str:
    """Method name as shown in tables (per-input normaliser where it varies; fits that changed nothing)."""
    label = row["method"]
    if row.get("adapted") is False:
        label += NOT_TRAINED if not row.get("steps") else KEPT_INITIAL
    if row.get("renormalize"):
        label += " (normaliser per input)"
    return label


def stop_text(values: Iterable[str]) -> str:
    """Stop reasons of a group's fits, most frequent first, e.g. ``time_budget ×2, early_stop``."""
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        if v:
            counts[v] += 1
    return ", ".join(f"{k} ×{n}" if n > 1 else k for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def aggregate(rows: list[dict], by: tuple[str, ...],
              metrics: tuple[str, ...] = ("mse", "psnr", "ssim", "frc")) -> list[dict]:
    """Group rows by ``by`` (+ method label): mean over images per seed, then mean/std over seeds.

    Returns dicts with the ``by`` values, ``method``, ``seeds`` (count), ``<metric>``,
    ``<metric>_sd`` and ``train_s``/``infer_ms`` (means); the fixed-pattern-free scores
    (``psnr_flat``, ``ssim_flat``, ``mse_flat``) when rows have them; and for trained rows
    ``steps``/``best_step`` (means over seeds) and ``stopped`` (the stop reasons, counted).
    """
    metrics = tuple(metrics) + tuple(m for m in ("mse_flat", "psnr_flat", "ssim_flat")
                                     if m not in metrics and any(_finite(r.get(m)) for r in rows))
    groups: dict[tuple, dict[object, list[dict]]] = defaultdict(lambda: defaultdict(list))
    order: list[tuple] = []
    for r in rows:
        key = (*tuple(r.get(k) for k in by), method_label(r))
        if key not in groups:
            order.append(key)
        groups[key][r.get("seed")].append(r)
    out = []
    for key in order:
        per_seed = groups[key]
        agg: dict = dict(zip(by, key[:-1], strict=True))
        agg["method"] = key[-1]
        agg["seeds"] = len(per_seed)
        for m in (*metrics, "train_s", "infer_ms"):
            seed_means = [_finite_mean(r.get(m) for r in rs) for rs in per_seed.values()]
            finite = [x for x in seed_means if math.isfinite(x)]
            agg[m] = float(np.mean(finite)) if finite else math.nan
            agg[m + "_sd"] = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
        # one fit per seed (every image of a seed is scored with the same model)
        fits = [rs[0] for rs in per_seed.values() if rs[0].get("adapted") is not None]
        agg["fits"] = len(fits)
        agg["steps"] = float(np.mean([r.get("steps") or 0 for r in fits])) if fits else math.nan
        agg["best_step"] = float(np.mean([r.get("best_step") or 0 for r in fits])) if fits else math.nan
        agg["stopped"] = stop_text(r.get("stopped") or "" for r in fits)
        out.append(agg)
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------
def fmt(metric: str, value: float, sd: float | None = None) -> str:
    """A table cell: MSE in scientific notation, PSNR 2 decimals, SSIM/FRC 3; ``± sd`` when known."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    spec = {"mse": ".2e", "mae": ".2e", "psnr": ".2f", "ssim": ".3f", "frc": ".3f", "train_s": ".1f",
            "infer_ms": ".1f"}.get(metric.removesuffix("_flat").removesuffix("_other"), ".3g")
    text = format(value, spec)
    if sd is not None and math.isfinite(sd):
        text += " ± " + format(sd, spec)
    return text


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def steps_text(agg: dict) -> str:
    """``steps (best B)`` of a group's fits (means over seeds), ``-`` for methods that do not train."""
    if not agg.get("fits"):
        return "-"
    return f"{agg['steps']:.0f} (best {agg['best_step']:.0f})"


def metric_table(aggs: list[dict], keys: list[tuple[str, str]], *, with_time: bool = True) -> str:
    """Long-format table: key columns, method, MSE, PSNR, SSIM, mean FRC (mean ± sd over seeds), fit s.

    With fixed-pattern-free scores in the rows (simulated data), PSNR and SSIM against that truth
    follow; with trained methods, their steps (best step) and stop reasons.
    """
    flat = any(_finite(a.get("psnr_flat")) for a in aggs)
    fitted = any(a.get("fits") for a in aggs)
    header = [label for _, label in keys] + ["method", "MSE", "PSNR (dB)", "SSIM", "mean FRC"]
    if flat:
        header += ["PSNR no FP", "SSIM no FP"]
    header.append("seeds")
    if with_time:
        header.append("fit s")
    if fitted:
        header += ["steps (best)", "stopped"]
    body = []
    for a in aggs:
        row = [("-" if a.get(k) is None else (f"{a[k]:g}" if isinstance(a[k], float) else str(a[k]))) for k, _ in keys]
        row += [a["method"]] + [fmt(m, a[m], a[m + "_sd"]) for m in ("mse", "psnr", "ssim", "frc")]
        if flat:
            row += [fmt(m, a.get(m, math.nan), a.get(m + "_sd")) for m in ("psnr_flat", "ssim_flat")]
        row.append(str(a["seeds"]))
        if with_time:
            row.append(fmt("train_s", a["train_s"]) if a["train_s"] else "-")
        if fitted:
            row += [steps_text(a), a.get("stopped") or "-"]
        body.append(row)
    return markdown_table(header, body)


FLAT_NOTE = ("'no FP' columns: scored against the expected image without the camera's fixed pattern (median offset, "
             "gain and dark current instead of the per-pixel maps); the other columns against the simulator's ground "
             "truth, which contains the pattern. Averaging frames keeps the pattern, spatial denoising removes it.")
NOT_TRAINED_NOTE = (f"'{NOT_TRAINED.strip()}' / '{KEPT_INITIAL.strip()}': the fit ran no step, or no validation beat "
                    "the initial weights, so the row is the starting network (the backbone; an untrained network for "
                    "scratch), not a trained result.")


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_lines(aggs: list[dict], x: str, path: Path, *, title: str, xlabel: str, logx: bool = False,
               series: str = "method", metrics: tuple[str, ...] = PLOT_METRICS) -> Path:
    """One panel per metric, one line per ``series`` value, error bars = sd over seeds."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    names = list(dict.fromkeys(a[series] for a in aggs))
    for ax, m in zip(axes[0], metrics, strict=True):
        for name in names:
            pts = sorted((a[x], a[m], a[m + "_sd"]) for a in aggs if a[series] == name and a.get(x) is not None)
            if not pts:
                continue
            xs, ys, sds = zip(*pts, strict=True)
            err = [0.0 if not math.isfinite(s) else s for s in sds]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, label=str(name))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(METRIC_LABELS[m])
        if logx:
            ax.set_xscale("log")
        if m == "mse":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(aggs: list[dict], group: str, path: Path, *, title: str,
              metrics: tuple[str, ...] = ("psnr", "ssim", "frc")) -> Path:
    """Grouped bars: one group per ``group`` value, one bar per method."""
    plt = _plt()
    groups = list(dict.fromkeys(a[group] for a in aggs))
    methods = list(dict.fromkeys(a["method"] for a in aggs))
    fig, axes = plt.subplots(len(metrics), 1,
                             figsize=(max(6.0, 1.1 * len(groups) * max(1, len(methods)) / 3), 2.6 * len(metrics)),
                             squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, m in zip(axes[:, 0], metrics, strict=True):
        for j, meth in enumerate(methods):
            vals = [next((a[m] for a in aggs if a[group] == g and a["method"] == meth), math.nan) for g in groups]
            ax.bar(np.arange(len(groups)) + j * width, vals, width, label=meth)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels([str(g) for g in groups], rotation=20, fontsize=7)
        ax.set_ylabel(METRIC_LABELS[m])
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=min(4, len(methods)))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def _rows_of(rows: list[dict], exp: str) -> list[dict]:
    return [r for r in rows if r["experiment"] == exp]


def _base(label: str) -> str:
    """The method of a table label (without the not-trained / per-input suffixes)."""
    return label.split(" [")[0].split(" (")[0]


def pretrained_vs_scratch(aggs: list[dict], x: str, label: str, pre: str = "transfer",
                          scratch: str = "scratch") -> list[str]:
    """Report lines comparing a pretrained method with its from-scratch twin, only where scratch converged.

    A scratch fit that stopped at its time or step budget is a partly trained network: beating it
    says nothing about pretraining, so such settings are listed with their steps and left out of
    the comparison. ``pre`` rows whose fit kept the backbone's weights are compared as what they
    are (the backbone), and the line says so.
    """
    keys = sorted({a[x] for a in aggs if a.get(x) is not None and _base(a["method"]) == scratch})
    if not keys:
        return []
    lines: list[str] = []
    converged: list = []
    for k in keys:
        sc = [a for a in aggs if a.get(x) == k and _base(a["method"]) == scratch]
        ok = sc and all(a["method"] == scratch and a.get("stopped") and {
            part.split(" ×")[0] for part in a["stopped"].split(", ")} == {"early_stop"} for a in sc)
        if ok:
            converged.append(k)
        else:
            a = sc[0]
            what = (f"stopped: {a.get('stopped')} after {a['steps']:.0f} steps, best step {a['best_step']:.0f}"
                    if a.get("fits") else "not trained")
            lines.append(f"- {label} {k:g}: `{scratch}` did not converge ({what}): no {pre}-vs-{scratch} comparison "
                         "is made here.")
    if not converged:
        lines.append(f"- `{scratch}` reached early stopping at none of the {len(keys)} {label} settings (budget "
                     f"too short on this machine), so this run makes **no claim** about {pre} vs {scratch}.")
        return lines
    for metric, higher in (("psnr", True), ("ssim", True), ("mse", False)):
        wins = n = 0
        diffs = []
        kept = set()
        for k in converged:
            pa = [a for a in aggs if a.get(x) == k and _base(a["method"]) == pre and math.isfinite(a[metric])]
            sa = [a for a in aggs if a.get(x) == k and a["method"] == scratch and math.isfinite(a[metric])]
            if not pa or not sa:
                continue
            n += 1
            va, vb = pa[0][metric], sa[0][metric]
            wins += (va > vb) if higher else (va < vb)
            diffs.append(va - vb)
            if pa[0]["method"] != pre:
                kept.add(k)
        if n:
            extra = f" (mean difference {np.mean(diffs):+.2f} dB)" if metric == "psnr" else ""
            note = (f"; at {', '.join(f'{k:g}' for k in sorted(kept))} the {pre} fit kept the backbone's weights"
                    if kept else "")
            lines.append(f"- {pre} beats converged {scratch} on {METRIC_LABELS[metric]} at {wins}/{n} {label} "
                         f"settings{extra}{note}.")
    return lines


BASELINES = ("noisy", "gaussian", "nlm")
PRODUCT = ("backbone", "transfer", "transfer-n2same", "pairs")


def losses(aggs: list[dict], x: str | None, label: str) -> list[str]:
    """Where the best livedenoise method (backbone, transfer[-n2same], pairs) scores below a classical baseline.

    One line per setting and metric (PSNR, SSIM): the product's best value, the baseline that beat it.
    """
    lines = []
    keys = list(dict.fromkeys(a.get(x) for a in aggs)) if x else [None]
    for k in keys:
        group = [a for a in aggs if (a.get(x) == k if x else True)]
        for metric in ("psnr", "ssim"):
            ours = [a for a in group if a["method"].split(" ")[0] in PRODUCT and math.isfinite(a[metric])]
            theirs = [a for a in group if a["method"] in BASELINES and math.isfinite(a[metric])]
            if not ours or not theirs:
                continue
            best = max(ours, key=lambda a: a[metric])
            rival = max(theirs, key=lambda a: a[metric])
            if rival[metric] > best[metric]:
                where = (f"{label} {k:g}" if isinstance(k, float) else f"{label} {k}") if x else label
                lines.append(f"- {where}: {METRIC_LABELS[metric]} best livedenoise `{best['method']}` "
                             f"{fmt(metric, best[metric])} < `{rival['method']}` {fmt(metric, rival[metric])}")
    return lines


def section(exp: str, rows: list[dict], out: Path, plots: bool, cfg: dict) -> tuple[str, dict[str, Path], list[dict]]:
    """Markdown for one experiment, its plot files and its aggregates."""

    files: dict[str, Path] = {}
    lines = [f"## {EXPERIMENT_TITLES.get(exp, exp)}", ""]
    if exp == "sweep":
        aggs = aggregate(rows, ("peak",))
        lines.append(f"Task: {cfg['structure']} on an unseen {cfg['camera']} camera, {cfg['image_size']}² px, "
                     f"{cfg['n_train']} noisy training frames, {cfg['sweep_pairs']} pairs for `pairs`, "
                     f"{cfg['n_test']} held-out test fields per seed; {cfg['sweep_seeds']} seed(s).")
        lines += ["", metric_table(aggs, [("peak", "peak photons")]), "", FLAT_NOTE, NOT_TRAINED_NOTE, ""]
        lines += pretrained_vs_scratch(aggs, "peak", "peak")
        lost = losses(aggs, "peak", "peak")
        lines += ["", ("Where livedenoise loses to a classical baseline:" if lost
                       else "livedenoise beats every classical baseline at every peak (PSNR and SSIM)."), *lost]
        if plots:
            files["sweep"] = plot_lines(aggs, "peak", out / "sweep.png", title="Peak-signal sweep",
                                        xlabel="peak photons", logx=True)
    elif exp == "stability":
        aggs = aggregate(rows, ("peak",))
        lines.append(f"Peak {cfg['stability_peak']:g} photons, {cfg['stability_seeds']} reruns (new fields, noise and "
                     "training seed each). sd = standard deviation across reruns; CV = sd / mean.")
        body = []
        for a in aggs:
            cv = {m: (100 * a[m + "_sd"] / abs(a[m]) if a[m] and math.isfinite(a[m + "_sd"]) else math.nan)
                  for m in ("mse", "ssim", "frc")}
            seed_vals = [_finite_mean(r["ssim"] for r in rows if method_label(r) == a["method"] and r["seed"] == s)
                         for s in sorted({r["seed"] for r in rows})]
            seed_vals = [v for v in seed_vals if math.isfinite(v)]
            body.append([a["method"],
                         fmt("mse", a["mse"], a["mse_sd"]), f"{cv['mse']:.1f}%" if math.isfinite(cv["mse"]) else "-",
                         fmt("ssim", a["ssim"], a["ssim_sd"]),
                         f"{cv['ssim']:.1f}%" if math.isfinite(cv["ssim"]) else "-",
                         fmt("frc", a["frc"], a["frc_sd"]),
                         f"{min(seed_vals):.3f} .. {max(seed_vals):.3f}" if seed_vals else "-", str(a["seeds"]),
                         steps_text(a), a.get("stopped") or "-"])
        lines += ["", markdown_table(["method", "MSE", "CV", "SSIM", "CV", "mean FRC", "SSIM range", "seeds",
                                      "steps (best)", "stopped"], body), "", NOT_TRAINED_NOTE]
        if plots:
            files["stability"] = _plot_stability(rows, out / "stability.png")
    elif exp == "size":
        aggs = aggregate(rows, ("n_train",))
        lines.append(f"Peak {cfg['size_peak']:g} photons; Noise2Self on 1..N noisy frames; evaluation on the same "
                     "held-out test fields for every N.")
        lines += ["", metric_table(aggs, [("n_train", "training frames")]), ""]
        lines += pretrained_vs_scratch(aggs, "n_train", "training-set size")
        if plots:
            files["size"] = plot_lines(aggs, "n_train", out / "size.png", title="Self-supervised training-set size",
                                       xlabel="noisy training frames", logx=True)
    elif exp == "loss":
        lrows = [{**r, "method": f"{r['method']} {r.get('loss') or ''}".strip()} for r in rows]
        aggs = aggregate(lrows, ("peak",))
        lines += ["", metric_table(aggs, [("peak", "peak photons")])]
        if plots:
            files["loss"] = plot_lines(aggs, "peak", out / "loss.png", title="L1 vs L2 self-supervised loss",
                                       xlabel="peak photons", logx=True)
    elif exp == "pairs":
        aggs = aggregate(rows, ("n_pairs",))
        lines.append(f"Peak {cfg['pairs_peak']:g} photons; clean image of a pair = mean of {cfg['reference_average']} "
                     "exposures; `transfer` (Noise2Self, no pairs) for reference.")
        lines += ["", metric_table(aggs, [("n_pairs", "pairs")]), ""]
        lines += pretrained_vs_scratch(aggs, "n_pairs", "pair count", pre="pairs", scratch="pairs-scratch")
        if plots:
            files["pairs"] = plot_lines([a for a in aggs if a.get("n_pairs") is not None], "n_pairs", out / "pairs.png",
                                        title="Fine-tuning with few pairs", xlabel="pairs")
    elif exp == "averages":
        aggs = aggregate(rows, ("average",))
        lines.append("Models fine-tuned on single frames (average 1), then applied to inputs averaged over N frames "
                     "(higher input SNR). 'normaliser per input' refits the noise model to each input, as a session "
                     "does when the noise level changes; otherwise the model's stored normaliser is used.")
        lines += ["", metric_table(aggs, [("average", "frames averaged")], with_time=False), "", FLAT_NOTE]
        lost = losses(aggs, "average", "average")
        lines += ["", ("Where livedenoise loses to a classical baseline (including the unprocessed input):" if lost
                       else "livedenoise beats the classical baselines at every input SNR."), *lost]
        if plots:
            files["averages"] = plot_lines(aggs, "average", out / "averages.png", title="Robustness across input SNR",
                                           xlabel="frames averaged", logx=True)
    elif exp == "real":
        aggs = aggregate([{**r, "seed": r["image"]} for r in rows], ("set",))
        # per set: mean over its pairs (each pair counted as a 'seed' for the sd)
        lines.append("Scores against each pair's clean image; sets marked affine use the least-squares affine fit of "
                     "the output to the reference (noisy and clean scaled independently). ± = sd over the pairs of the "
                     "set.")
        lines += ["", metric_table(aggs, [("set", "set")])]
        overall = aggregate([{**r, "seed": r["set"]} for r in rows], ())
        lines += ["", "Mean over sets (each set weighted equally):", "",
                  metric_table(overall, [], with_time=True)]
        lost = losses(aggs, "set", "set")
        lines += ["", ("Where livedenoise loses to a classical baseline:" if lost
                       else "livedenoise beats every classical baseline on every set (PSNR and SSIM)."), *lost]
        affine_sets = sorted({r["set"] for r in rows if r.get("affine")})
        lines.append(f"\nAffine-fit sets: {', '.join(affine_sets) if affine_sets else 'none'}.")
        if plots:
            files["real"] = plot_bars(aggs, "set", out / "real.png", title="Real pairs: per set")
        aggs = aggs + [{**a, "set": "ALL"} for a in overall]
    else:  # pragma: no cover
        aggs = aggregate(rows, ())
        lines += ["", metric_table(aggs, [])]
    for name, path in files.items():
        lines += ["", f"![{name}]({path.name})"]
    lines.append("")
    return "\n".join(lines), files, aggs


def _plot_stability(rows: list[dict], path: Path) -> Path:
    """Per-seed points and mean per method, one panel per metric."""
    plt = _plt()
    methods = list(dict.fromkeys(method_label(r) for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(4.2 * len(PLOT_METRICS), 3.2), squeeze=False)
    for ax, m in zip(axes[0], PLOT_METRICS, strict=True):
        for i, meth in enumerate(methods):
            vals = [_finite_mean(r[m] for r in rows if method_label(r) == meth and r["seed"] == s) for s in seeds]
            ax.scatter([i] * len(vals), vals, s=12, alpha=0.7)
            ax.hlines(_finite_mean(vals), i - 0.3, i + 0.3, color="k")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=20, fontsize=7)
        ax.set_ylabel(METRIC_LABELS[m])
        if m == "mse":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle("Rerun stability (one point per seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def json_safe(obj: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars to Python, NaN to null, +/-inf to strings, paths to text."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return json_safe(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_report(result: EvalResult, out: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write every file of a report into ``out`` (created); returns name -> path."""

    out.mkdir(parents=True, exist_ok=True)
    rows = [r.to_dict() for r in result.rows]
    cfg = result.config.to_dict()
    files: dict[str, Path] = {}
    experiments = list(dict.fromkeys(r["experiment"] for r in rows))
    sections, summary = [], {}
    for exp in experiments:
        text, f, aggs = section(exp, _rows_of(rows, exp), out, plots, cfg)
        sections.append(text)
        files.update(f)
        summary[exp] = aggs
    methods = sorted({r["method"] for r in rows})
    head = [
        f"# livedenoise evaluation ({cfg['name']})", "",
        f"- data: {result.source}",
        f"- backbone: `{result.backbone}`",
        f"- machine: {describe_machine(result.machine)}",
        f"- wall time: {result.seconds:.0f} s",
        f"- fits: at most {cfg['max_steps']} steps / {cfg['time_budget_s']:g} s each, validation every "
        f"{cfg.get('steps_per_validation', '?')} steps, patience {cfg['patience']}, patch {cfg['patch_size']}, "
        f"batch {cfg['batch_size']} (learning rates: TrainingConfig defaults)"
        + (f"; scratch fits until early stopping, at most {cfg['scratch_max_steps']} steps / "
           f"{cfg['scratch_time_budget_s']:g} s, validation every "
           f"{cfg.get('scratch_steps_per_validation', '?')} steps, "
           f"learning rate {cfg['scratch_lr']:g}" if "scratch_max_steps" in cfg else ""),
        "- metrics: `livedenoise.metrics.score` (reference percentile-normalised to 0.1/99.9 %; MSE in those units; "
        "SSIM 7x7; mean FRC over rings up to Nyquist); mean ± sd over seeds", "",
        "Methods:", "",
    ] + [f"- `{m}`: {METHOD_DESCRIPTIONS.get(m, m)}" for m in methods] + [""]
    report = "\n".join(head + sections)
    files["report"] = out / "report.md"
    files["report"].write_text(report)
    files["json"] = out / "results.json"
    files["json"].write_text(json.dumps(json_safe({**result.to_dict(), "summary": summary}), indent=1))
    files["csv"] = out / "results.csv"
    if rows:
        with files["csv"].open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows(rows)
    else:
        files["csv"].write_text("")
    return files
