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
  image itself (``livedenoise.normalization.Normalizer.fit``), BM3D with sigma 1 (PyPI ``bm3d``, peers
  environment), closed-form unbiased inverse (Makitalo & Foi 2011/2013);
* ``n2v (careamics)``: CAREamics Noise2Void trained on the same noisy images for the same time budget
  as livedenoise's fine-tuning (peers environment: ``bash benchmarks/setup_peers.sh``);
* ``livedenoise backbone``: the shipped backbone zero-shot; ``livedenoise fine-tune``: backbone +
  self-supervised fine-tuning (``finetune``'s default objective) on the same noisy images, same budget.

On real pairs every learned method sees one image at a time (zero-shot), as in ARCHITECTURE.md's
measurements; on the simulator the few noisy frames of a task are trained on together.
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
from common import (  # noqa: E402
    DEFAULT_OUTPUT, DEV_AFFINE_SETS, REAL_PAIRS_DEV, PeerError, load_average, machine, machine_line, peers_python,
    run_peer, table, write_outputs,
)

METHODS = ("noisy", "gaussian", "nlm", "vst+bm3d", "n2v (careamics)", "livedenoise backbone", "livedenoise fine-tune")


# ---------------------------------------------------------------------------------------------
# VST + BM3D
# ---------------------------------------------------------------------------------------------
def anscombe_unbiased_inverse(d: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of the Anscombe transform (Makitalo & Foi).

    ``E[e'] ~= d^2/4 + sqrt(3/2)/(4 d) - 11/(8 d^2) + 5 sqrt(3/2)/(8 d^3) - 1/8``; below ``d = 2 sqrt(3/8)``
    (zero counts) the result is clipped to 0. The algebraic inverse ``d^2/4 - 3/8`` is biased low at
    small counts, which is visible in BM3D's output at a few photons.
    """
    d = np.asarray(d, np.float64)
    safe = np.maximum(d, 2 * math.sqrt(3 / 8))
    c = math.sqrt(1.5)
    out = 0.25 * safe**2 + 0.25 * c / safe - 1.375 / safe**2 + 0.625 * c / safe**3 - 0.125
    return np.maximum(out, 0.0)


def vst_forward(frame: np.ndarray):
    """Stabilise ``frame`` to noise std ~1 with parameters estimated from the frame; returns (z, normalizer)."""
    from livedenoise.normalization import Normalizer

    norm = Normalizer.fit([frame])  # estimate_poisson_gaussian on the frame itself; scale set below
    norm = norm.copy(scale=1.0)
    return norm.forward(frame).astype(np.float64), norm


def vst_inverse(z: np.ndarray, norm) -> np.ndarray:
    e_prime = anscombe_unbiased_inverse(z)  # E[e + noise_b] for noise_a == 1
    e = e_prime - norm.noise_b
    return (e * norm.gain + norm.offset).astype(np.float32)


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


def simulated_cases(peaks: list[float], size: int, n_images: int, seed: int) -> list[Case]:
    from livedenoise.evaluate import SimulatedTask

    task = SimulatedTask("filaments", size)
    cases = []
    for peak in peaks:
        noisy, truth = task.test_set(peak, seed, n_images)
        cases.append(Case(f"sim peak {peak:g}", f"{peak:g} photons", noisy, truth, affine=False))
    return cases


def real_cases(folder: Path, max_per_set: int | None, crop: int | None) -> list[Case]:
    from livedenoise.evaluate import _crop
    from livedenoise.training.pairs import load_pair_folder

    by_set: dict[str, int] = {}
    cases = []
    for p in load_pair_folder(folder):
        if max_per_set and by_set.get(p.set, 0) >= max_per_set:
            continue
        by_set[p.set] = by_set.get(p.set, 0) + 1
        cases.append(Case(f"{p.set}/{p.name}", p.set, [_crop(np.asarray(p.noisy), crop)],
                          [_crop(np.asarray(p.clean), crop).astype(np.float32)], affine=p.set in DEV_AFFINE_SETS))
    return cases


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
def _vst_seconds(frames: list[np.ndarray]) -> float:
    """Seconds per image of the forward + inverse transform (including the noise estimate)."""
    t0 = time.perf_counter()
    for f in frames:
        z, norm = vst_forward(f)
        vst_inverse(z, norm)
    return (time.perf_counter() - t0) / len(frames)


def run_method(method: str, case: Case, *, backbone, budget_s: float, training) -> tuple[list[np.ndarray] | None, float, str]:
    """Denoise a case; returns (outputs or None, wall seconds per image incl. training, note)."""
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
    elif method == "vst+bm3d":
        zs, norms = zip(*(vst_forward(f) for f in case.noisy))
        den, secs, info = run_peer({"method": "bm3d", "sigma": 1.0}, list(zs))
        outs = [vst_inverse(z, nm) for z, nm in zip(den, norms)]
        note = "a,b estimated from each image"
        # the worker's own BM3D timing plus the transforms here; the subprocess start-up is not counted
        return outs, float(np.mean(secs)) + _vst_seconds(case.noisy), note
    elif method == "n2v (careamics)":
        outs, secs, info = run_peer({"method": "n2v", "time_budget_s": budget_s, "groups": [list(range(n))],
                                     "patch_size": 64, "batch_size": 16, "seed": 0}, list(case.noisy),
                                    timeout_s=budget_s * 4 + 600)
        note = f"careamics {info.get('careamics')}, epochs {info.get('epochs')}"
        return outs, float(np.mean(secs)), note  # the worker's own timing excludes its interpreter start-up
    elif method == "livedenoise backbone":
        ckpt = with_normalizer(backbone, case.noisy)
        den = Denoiser(ckpt, device="cpu")
        outs = [den.denoise(f) for f in case.noisy]
    elif method == "livedenoise fine-tune":
        res = finetune(backbone, case.noisy, None, training=training, time_budget_s=budget_s, device="cpu", seed=0)
        den = Denoiser(res.checkpoint, device="cpu")
        outs = [den.denoise(f) for f in case.noisy]
        note = f"{res.fit.objective}, {res.fit.steps} steps, {res.fit.stopped}"
    else:
        raise ValueError(method)
    return outs, (time.perf_counter() - t0) / n, note


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
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    ap.add_argument("--budget", type=float, help="training seconds per case for the learned methods")
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
            if method in ("vst+bm3d", "n2v (careamics)") and peers is None:
                failures[method] = "not installed: run `bash benchmarks/setup_peers.sh`"
                continue
            print(f"[quality] {case.name}: {method}", flush=True)
            try:
                outs, secs, note = run_method(method, case, backbone=backbone, budget_s=budget, training=training)
            except PeerError as exc:
                failures[method] = str(exc)
                print(f"  failed: {exc}", flush=True)
                continue
            if note:
                notes[(case.name, method)] = note
            for i, (out, ref) in enumerate(zip(outs, case.reference)):
                s = score(ref, out, affine=case.affine, frc=True)
                results.append({"case": case.name, "group": case.group, "image": i, "method": method,
                                "affine": case.affine, "psnr": s.psnr, "ssim": s.ssim, "mse": s.mse, "frc": s.frc,
                                "seconds_per_image": secs, "pixels": int(out.size)})
    info = {**machine(), "load_average_start": load_start}
    md = render(results, failures, notes, info, budget, quick, real_note, backbone.name)
    payload = {"machine": info, "quick": quick, "budget_s": budget, "backbone": backbone.name, "results": results,
               "failures": failures, "notes": {f"{k[0]} | {k[1]}": v for k, v in notes.items()}}
    jp, mp = write_outputs(args.output, "quality" + ("-quick" if quick else ""), payload, md)
    print(md)
    print(f"wrote {jp} and {mp}")
    return 0


def _mean(vals) -> float:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def render(results: list[dict], failures: dict, notes: dict, info: dict, budget: float, quick: bool, real_note: str,
           backbone: str) -> str:
    lines = [f"# Quality benchmark{' (quick)' if quick else ''}", "",
             f"- machine: {machine_line(info)}",
             f"- learned methods: {budget:g} s training budget per case (N2V and livedenoise fine-tune alike); "
             f"livedenoise backbone `{backbone}`",
             "- metric: `livedenoise.metrics.score`; simulated cases against the noise-free truth, real pairs against "
             "the clean image (affine fit for " + ", ".join(DEV_AFFINE_SETS) + ")", ""]
    groups = list(dict.fromkeys(r["group"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    if results:
        body = []
        for g in groups:
            for m in methods:
                rs = [r for r in results if r["group"] == g and r["method"] == m]
                if rs:
                    body.append([g, m, f"{_mean(r['psnr'] for r in rs):.2f}", f"{_mean(r['ssim'] for r in rs):.3f}",
                                 f"{_mean(r['frc'] for r in rs):.3f}", f"{_mean(r['seconds_per_image'] for r in rs):.2f}",
                                 len(rs)])
        lines += ["## Per data set", "", table(["data", "method", "PSNR (dB)", "SSIM", "mean FRC", "s / image", "images"], body), ""]
        for kind, pick in (("simulated", lambda r: r["case"].startswith("sim ")), ("real", lambda r: not r["case"].startswith("sim "))):
            sel = [r for r in results if pick(r)]
            if not sel:
                continue
            body = []
            for m in methods:
                per_group = [[r for r in sel if r["method"] == m and r["group"] == g] for g in groups]
                per_group = [rs for rs in per_group if rs]
                if not per_group:
                    continue
                body.append([m, f"{_mean(_mean(r['psnr'] for r in rs) for rs in per_group):.2f}",
                             f"{_mean(_mean(r['ssim'] for r in rs) for rs in per_group):.3f}",
                             f"{_mean(_mean(r['frc'] for r in rs) for rs in per_group):.3f}",
                             f"{_mean(r['seconds_per_image'] for rs in per_group for r in rs):.2f}"])
            lines += [f"## Mean over {kind} data sets (each set weighted equally)", "",
                      table(["method", "PSNR (dB)", "SSIM", "mean FRC", "s / image"], body), ""]
    if notes:
        lines += ["Notes: " + "; ".join(f"{k[0]} {k[1]}: {v}" for k, v in list(notes.items())[:12]), ""]
    if failures:
        lines += ["Not run: " + "; ".join(f"{k}: {v}" for k, v in failures.items()), ""]
    if real_note:
        lines += [real_note, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
