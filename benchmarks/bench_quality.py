"""Quality and wall-clock time of livedenoise and its peers, side by side, on the same images.

    python benchmarks/bench_quality.py --quick            # minutes on a 2-core CPU
    python benchmarks/bench_quality.py                    # all dev pairs, whole images, 60 s budgets
    python benchmarks/bench_quality.py --no-real          # simulator only

Data: (1) simulated tasks (filaments, an unseen camera) at several peak signals, scored against the
noise-free truth; (2) ``../shared/data/real_pairs_dev`` when present (read in place, never copied),
scored against each pair's clean image, with the affine-fit metric for the sets MANIFEST.md marks as
independently scaled (``common.DEV_AFFINE_SETS``). Every method gets the same noisy images and the
same metric code (``livedenoise.metrics.score``), and is timed on this machine:

* ``gaussian`` (sigma 1) and ``nlm`` (scikit-image; MANIFEST.md's settings);
* ``vst+bm3d``: generalised Anscombe transform with Poisson-Gaussian parameters estimated from the
  image itself (``livedenoise.noise_model.fit_noise_model``, the estimate ``livedenoise denoise``
  makes for a single image), BM3D with sigma 1 (PyPI ``bm3d``, peers environment), closed-form
  unbiased inverse (Makitalo & Foi 2011/2013);
* ``vst+nlm``: the same transform and inverse around scikit-image non-local means with sigma 1
  (no peers environment needed);
* ``n2v (careamics)``: CAREamics Noise2Void trained on the same noisy images for the same time budget
  as livedenoise's fine-tuning (peers environment: ``bash benchmarks/setup_peers.sh``);
* ``n2v (careamics) to convergence``: the same, trained until its validation loss has not improved for
  ``--n2v-patience`` epochs (capped at ``--n2v-cap`` seconds per case), predicting with the weights of
  its best validation loss; each row records the epochs, the best epoch and whether it converged;
* ``livedenoise backbone``: the shipped backbone zero-shot; ``livedenoise fine-tune``: backbone +
  self-supervised fine-tuning (``finetune``'s default objective) on the same noisy images, same budget.

On real pairs every learned method sees one image at a time (zero-shot), as in the house plan's
measurements (docs/design.md, "What to beat"); on the simulator the few noisy frames of a task are trained on
together. Simulated cases are scored twice: against the simulator's ground truth (which contains the camera's per-pixel
offset/gain pattern) and against the truth without that pattern (``psnr_flat``/``ssim_flat``;
``SimulatedTask.truth_flat``).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_OUTPUT,
    DEV_AFFINE_SETS,
    REAL_PAIRS_DEV,
    PeerError,
    finite_mean,
    load_average,
    machine,
    machine_line,
    peers_python,
    run_peer,
    table,
    vst_bm3d,
    vst_nlm,
    write_outputs,
)

METHODS = ("noisy", "gaussian", "nlm", "vst+nlm", "vst+bm3d", "n2v (careamics)", "n2v (careamics) to convergence",
           "livedenoise backbone", "livedenoise fine-tune")
#: Run unless ``--methods`` says otherwise; N2V to convergence takes up to ``--n2v-cap`` per case.
DEFAULT_METHODS = tuple(m for m in METHODS if m != "n2v (careamics) to convergence")
#: Methods that run in the peers environment (skipped with a reason when it is missing).
PEER_METHODS = ("vst+bm3d", "n2v (careamics)", "n2v (careamics) to convergence")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    """Noisy images that are denoised together (a simulated task, or one real pair)."""

    name: str
    group: str  # simulated peak or real set
    noisy: list[np.ndarray]
    reference: list[np.ndarray]
    affine: bool
    reference_flat: list[np.ndarray] | None = None  # simulated: the truth without the camera's fixed pattern


def simulated_cases(peaks: list[float], size: int, n_images: int, seed: int) -> list[Case]:
    from livedenoise.evaluate import SimulatedTask

    task = SimulatedTask("filaments", size)
    cases = []
    for peak in peaks:
        noisy, truth = task.test_set(peak, seed, n_images)
        cases.append(Case(f"sim peak {peak:g}", f"{peak:g} photons", noisy, truth, affine=False,
                          reference_flat=task.test_truth_flat(peak, seed, n_images)))
    return cases


def real_cases(folder: Path, max_per_set: int | None, crop: int | None) -> list[Case]:
    from livedenoise.evaluate.real_pairs import centre_crop
    from livedenoise.training.pairs import load_pair_folder

    by_set: dict[str, int] = {}
    cases = []
    for p in load_pair_folder(folder):
        if max_per_set and by_set.get(p.set, 0) >= max_per_set:
            continue
        by_set[p.set] = by_set.get(p.set, 0) + 1
        cases.append(Case(f"{p.set}/{p.name}", p.set, [centre_crop(np.asarray(p.noisy), crop)],
                          [centre_crop(np.asarray(p.clean), crop).astype(np.float32)], affine=p.set in DEV_AFFINE_SETS))
    return cases


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
def run_method(method: str, case: Case, *, backbone, budget_s: float, training, n2v_cap_s: float = 600.0,
               n2v_patience: int = 200) -> tuple[list[np.ndarray], float, str, dict | None]:
    """Denoise a case; returns (outputs, wall seconds per image incl. training, note, fit record).

    The fit record of a trained method (steps, best step, stop reason, whether the weights changed)
    goes into every result row, so a "fine-tune" that kept the backbone cannot pass for a trained one.
    """
    from livedenoise.evaluate import gaussian_baseline, nlm_baseline, with_normalizer
    from livedenoise.inference import Denoiser
    from livedenoise.training.finetune import finetune

    n = len(case.noisy)
    t0 = time.perf_counter()
    note = ""
    if method == "noisy":
        outs = [np.asarray(f, np.float32) for f in case.noisy]
    elif method == "gaussian":
        outs = [gaussian_baseline(f) for f in case.noisy]
    elif method == "nlm":
        outs = [nlm_baseline(f) for f in case.noisy]
    elif method == "vst+nlm":
        outs = [vst_nlm(f) for f in case.noisy]
        note = "a,b estimated from each image"
    elif method == "vst+bm3d":
        outs, secs = vst_bm3d(case.noisy)
        note = "a,b estimated from each image"
        return outs, float(np.mean(secs)), note, None
    elif method == "n2v (careamics)":
        outs, secs, info = run_peer({"method": "n2v", "time_budget_s": budget_s, "groups": [list(range(n))],
                                     "patch_size": 64, "batch_size": 16, "seed": 0}, list(case.noisy),
                                    timeout_s=budget_s * 4 + 600)
        note = f"careamics {info.get('careamics')}, epochs {info.get('epochs')}"
        epochs = info.get("epochs")  # one entry per training group (here one group per case)
        epochs = sum(epochs) if isinstance(epochs, list) else epochs
        fit = {"epochs": epochs, "stopped": "time_budget"}  # Lightning's Timer ends every N2V run
        return outs, float(np.mean(secs)), note, fit  # the worker's own timing excludes its interpreter start-up
    elif method == "n2v (careamics) to convergence":
        outs, secs, info = run_peer({"method": "n2v", "converge": True, "patience": n2v_patience,
                                     "time_budget_s": n2v_cap_s, "groups": [list(range(n))], "patch_size": 64,
                                     "batch_size": 16, "seed": 0}, list(case.noisy), timeout_s=n2v_cap_s * 2 + 600)
        (g,) = info["fits"]  # one training group per case
        note = (f"careamics {info.get('careamics')}, {g['epochs']} epochs (best {g['best_epoch']}), "
                f"{g['stopped']}, patience {info['patience']}")
        fit = {"epochs": g["epochs"], "best_epoch": g["best_epoch"], "stopped": g["stopped"],
               "converged": g["stopped"] == "early_stop"}
        return outs, float(np.mean(secs)), note, fit
    elif method == "livedenoise backbone":
        ckpt = with_normalizer(backbone, case.noisy)
        den = Denoiser(ckpt, device="cpu")
        outs = [den.denoise(f) for f in case.noisy]
    elif method == "livedenoise fine-tune":
        res = finetune(backbone, case.noisy, None, training=training, time_budget_s=budget_s, device="cpu", seed=0)
        den = Denoiser(res.checkpoint, device="cpu")
        outs = [den.denoise(f) for f in case.noisy]
        fit = fit_record(res.fit)
        note = (f"{res.fit.objective}, {fit['steps']} steps (best {fit['best_step']}), {fit['stopped']}"
                + ("" if fit["adapted"] else ": the backbone's weights were kept"))
        return outs, (time.perf_counter() - t0) / n, note, fit
    else:
        raise ValueError(method)
    return outs, (time.perf_counter() - t0) / n, note, None


def fit_record(fit) -> dict:
    """Steps, best step, stop reason and ``adapted`` (the loop's flag, else: kept weights from a later validation)."""
    adapted = getattr(fit, "adapted", None)
    if adapted is None:
        adapted = fit.steps > 0 and fit.best_step > 0
    return {"steps": int(fit.steps), "best_step": int(fit.best_step), "stopped": str(fit.stopped),
            "adapted": bool(adapted)}


def main(argv: list[str] | None = None) -> int:
    import logging

    from livedenoise.config import TrainingConfig
    from livedenoise.metrics import score
    from livedenoise.modelspec import load_model_spec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small crops, one pair per set, short budgets")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--backbone", default="fast")
    ap.add_argument("--pairs", type=Path, default=REAL_PAIRS_DEV, help="real pair folder (default: shared dev pairs)")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help="comma-separated subset of: " + ", ".join(METHODS))
    ap.add_argument("--budget", type=float, help="training seconds per case for the learned methods")
    ap.add_argument("--n2v-cap", type=float, default=600.0,
                    help="seconds per case at most for 'n2v (careamics) to convergence' (default 600)")
    ap.add_argument("--n2v-patience", type=int, default=200,
                    help="epochs without a lower validation loss that end 'n2v (careamics) to convergence' "
                         "(default 200)")
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.WARNING)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown method(s): {', '.join(sorted(unknown))}")
    quick = args.quick
    load_start = load_average()
    budget = args.budget or (15.0 if quick else 60.0)
    training = TrainingConfig(max_steps=100_000, patience=8, steps_per_validation=10,
                              batch_size=4 if quick else 8, time_budget_s=budget)
    backbone = load_model_spec(args.backbone)
    cases: list[Case] = []
    if not args.no_sim:
        cases += simulated_cases([10.0, 100.0] if quick else [5.0, 20.0, 100.0, 500.0], 64 if quick else 256,
                                 2 if quick else 4, seed=0)
    real_note = ""
    if not args.no_real:
        if args.pairs.is_dir():
            cases += real_cases(args.pairs, 1 if quick else None, 256 if quick else None)
        else:
            real_note = f"real pairs skipped: {args.pairs} not found"
    peers = peers_python()
    results, notes, failures = [], {}, {}
    for case in cases:
        for method in methods:
            if method in PEER_METHODS and peers is None:
                failures[method] = "not installed: run `bash benchmarks/setup_peers.sh`"
                continue
            print(f"[quality] {case.name}: {method}", flush=True)
            try:
                outs, secs, note, fit = run_method(method, case, backbone=backbone, budget_s=budget,
                                                   training=training, n2v_cap_s=args.n2v_cap,
                                                   n2v_patience=args.n2v_patience)
            except PeerError as exc:
                failures[method] = str(exc)
                print(f"  failed: {exc}", flush=True)
                continue
            if note:
                notes[(case.name, method)] = note
            flats = case.reference_flat or [None] * len(outs)
            for i, (out, ref, flat) in enumerate(zip(outs, case.reference, flats, strict=True)):
                s = score(ref, out, affine=case.affine, frc=True)
                f = score(flat, out) if flat is not None else None
                results.append({"case": case.name, "group": case.group, "image": i, "method": method,
                                "affine": case.affine, "psnr": s.psnr, "ssim": s.ssim, "mse": s.mse, "frc": s.frc,
                                "psnr_flat": f.psnr if f else None, "ssim_flat": f.ssim if f else None,
                                "seconds_per_image": secs, "pixels": int(out.size), "fit": fit})
    info = {**machine(), "load_average_start": load_start}
    payload = {"machine": info, "quick": quick, "budget_s": budget, "backbone": backbone.name, "results": results,
               "n2v_converged": {"cap_s": args.n2v_cap, "patience_epochs": args.n2v_patience},
               "failures": failures, "notes": {f"{k[0]} | {k[1]}": v for k, v in notes.items()}}
    name = "quality" + ("-quick" if quick else "")
    write_outputs(args.output, name, payload, "(rendering)\n")  # the measurements survive a rendering error
    md = render(results, failures, notes, info, budget, quick, real_note, backbone.name)
    jp, mp = write_outputs(args.output, name, payload, md)
    print(md)
    print(f"wrote {jp} and {mp}")
    return 0




def is_simulated(row: dict) -> bool:
    return row["case"].startswith("sim ")


def summarise(results: list[dict], kind: str) -> list[dict]:
    """Per method, the mean over the ``kind`` ("simulated"/"real") data sets, each set weighted equally.

    Keys: ``method``, ``psnr``, ``ssim``, ``frc``, ``psnr_flat``/``ssim_flat`` (simulated; NaN
    otherwise), ``seconds_per_image``, ``sets``, and for trained methods ``fits`` (cases),
    ``adapted`` (cases whose fit changed the weights), ``steps``/``best_step`` (means).
    """
    sel = [r for r in results if is_simulated(r) == (kind == "simulated")]
    out = []
    for m in dict.fromkeys(r["method"] for r in sel):
        groups = list(dict.fromkeys(r["group"] for r in sel))
        per_group = [[r for r in sel if r["method"] == m and r["group"] == g] for g in groups]
        per_group = [rs for rs in per_group if rs]
        agg = {"method": m, "sets": len(per_group),
               "seconds_per_image": finite_mean(r["seconds_per_image"] for rs in per_group for r in rs)}
        for k in ("psnr", "ssim", "frc", "psnr_flat", "ssim_flat"):
            agg[k] = finite_mean(finite_mean(r.get(k) for r in rs) for rs in per_group)
        fits = {r["case"]: r["fit"] for rs in per_group for r in rs if r.get("fit")}
        if fits:
            agg["fits"] = len(fits)
            agg["adapted"] = sum(1 for f in fits.values() if f.get("adapted", True))
            if any("steps" in f for f in fits.values()):
                agg["steps"] = finite_mean(f.get("steps") for f in fits.values())
                agg["best_step"] = finite_mean(f.get("best_step") for f in fits.values())
            if any("epochs" in f for f in fits.values()):
                agg["epochs"] = finite_mean(f.get("epochs") for f in fits.values())
            if any("converged" in f for f in fits.values()):
                agg["best_epoch"] = finite_mean(f.get("best_epoch") for f in fits.values())
                agg["converged"] = sum(1 for f in fits.values() if f.get("converged"))
        out.append(agg)
    return out


def fit_text(agg: dict) -> str:
    """``steps (best): 120 (40); adapted 5/7`` for trained methods, ``-`` otherwise."""
    if not agg.get("fits"):
        return "-"
    parts = []
    if "steps" in agg:
        parts.append(f"{agg['steps']:.0f} steps (best {agg['best_step']:.0f})")
        parts.append(f"weights changed in {agg['adapted']}/{agg['fits']}")
    if "epochs" in agg:
        parts.append(f"{agg['epochs']:.1f} epochs")
    if "converged" in agg:
        parts[-1] += f" (best {agg['best_epoch']:.0f}); converged in {agg['converged']}/{agg['fits']}"
    return "; ".join(parts)


def render(results: list[dict], failures: dict, notes: dict, info: dict, budget: float, quick: bool, real_note: str,
           backbone: str) -> str:
    lines = [f"# Quality benchmark{' (quick)' if quick else ''}", "",
             f"- machine: {machine_line(info)}",
             f"- learned methods: {budget:g} s training budget per case (N2V and livedenoise fine-tune alike); "
             f"livedenoise backbone `{backbone}`",
             "- metric: `livedenoise.metrics.score`; simulated cases against the noise-free truth (with the camera's "
             "fixed pattern, as the simulator returns it; 'no FP': without it), real pairs against the clean image "
             "(affine fit for " + ", ".join(DEV_AFFINE_SETS) + ")", ""]
    groups = list(dict.fromkeys(r["group"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    if results:
        flat = any(r.get("psnr_flat") is not None for r in results)
        body = []
        for g in groups:
            for m in methods:
                rs = [r for r in results if r["group"] == g and r["method"] == m]
                if rs:
                    fits = [r["fit"] for r in rs if r.get("fit") and "steps" in r["fit"]]
                    label = m + (" [initial weights kept]" if fits and not any(f["adapted"] for f in fits) else "")
                    row = [g, label, f"{finite_mean(r['psnr'] for r in rs):.2f}",
                           f"{finite_mean(r['ssim'] for r in rs):.3f}"]
                    if flat:
                        row += [_cell(finite_mean(r.get("psnr_flat") for r in rs), ".2f"),
                                _cell(finite_mean(r.get("ssim_flat") for r in rs), ".3f")]
                    row += [f"{finite_mean(r['frc'] for r in rs):.3f}",
                            f"{finite_mean(r['seconds_per_image'] for r in rs):.2f}",
                            len(rs), "; ".join(dict.fromkeys(
                                [f"{f['steps']} (best {f['best_step']}), {f['stopped']}" for f in fits]
                                + [f"{r['fit']['epochs']} epochs, {r['fit']['stopped']}" for r in rs
                                   if r.get("fit") and "epochs" in r["fit"]])) or "-"]
                    body.append(row)
        header = ["data", "method", "PSNR (dB)", "SSIM"] + (["PSNR no FP", "SSIM no FP"] if flat else []) + [
            "mean FRC", "s / image", "images", "steps (best), stop"]
        lines += ["## Per data set", "", table(header, body), ""]
        for kind in ("simulated", "real"):
            aggs = summarise(results, kind)
            if not aggs:
                continue
            sim = kind == "simulated"
            body = [[a["method"], f"{a['psnr']:.2f}", f"{a['ssim']:.3f}"]
                    + ([_cell(a["psnr_flat"], ".2f"), _cell(a["ssim_flat"], ".3f")] if sim else [])
                    + [f"{a['frc']:.3f}", f"{a['seconds_per_image']:.2f}", fit_text(a)] for a in aggs]
            header = ["method", "PSNR (dB)", "SSIM"] + (["PSNR no FP", "SSIM no FP"] if sim else []) + [
                "mean FRC", "s / image", "training"]
            lines += [f"## Mean over {kind} data sets (each set weighted equally)", "", table(header, body), ""]
    if notes:
        lines += ["Notes: " + "; ".join(f"{k[0]} {k[1]}: {v}" for k, v in list(notes.items())[:12]), ""]
    if failures:
        lines += ["Not run: " + "; ".join(f"{k}: {v}" for k, v in failures.items()), ""]
    if real_note:
        lines += [real_note, ""]
    return "\n".join(lines)


def _cell(value: float, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
