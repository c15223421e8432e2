"""The real dev pairs, every way a user can denoise them, side by side in one run, per set and overall.

    python benchmarks/bench_dev_pairs.py --quick     # 1 pair per set, 256² crops, 15 s adapt (~7 min, 2 cores)
    python benchmarks/bench_dev_pairs.py             # every pair, whole images, 60 s adapt
    python benchmarks/bench_dev_pairs.py --quick --model runs/my-backbone.safetensors   # add a candidate checkpoint

Data: ``../shared/data/real_pairs_dev`` (MANIFEST.md there), read in place, never copied into the
project. Each pair's noisy image is denoised and scored against its clean image with
``livedenoise.metrics.score``; the sets MANIFEST.md marks as independently scaled (``DEV_AFFINE_SETS``)
use the affine-fit metric. With ``--quick`` (and ``--crop``) the centre crop of each noisy image is
written to a temporary folder (deleted at the end), because the public API reads files.

Methods, all on the same image:

* ``raw``: the noisy image itself; ``gaussian``: scikit-image Gaussian blur, sigma 1 px.
* ``denoise <backbone>``: the default ``livedenoise denoise`` path through its public Python twin,
  :func:`livedenoise.batch.denoise_dataset` (noise model fitted to the image, residual check), once per
  shipped backbone (``livedenoise.checkpoint.DEFAULT_BACKBONE`` is the command's default) and once per ``--model PATH``.
* ``adapt self <backbone>``: the same call with ``adapt="self"`` and a ``--budget`` second fine-tune
  (60 s; 15 s with ``--quick``); the adapted checkpoint's steps, best step and stop reason are recorded.
* ``vst+bm3d``: generalised Anscombe transform with the same single-image noise estimate
  (``livedenoise.noise_model.fit_noise_model``), BM3D sigma 1 (peers environment: ``bash
  benchmarks/setup_peers.sh``; reported as not run without it), closed-form unbiased inverse.
* ``vst+nlm``: the same transform and inverse around scikit-image non-local means, sigma 1.

Writes ``dev-pairs[-quick].json`` (every score, the machine, the date, steps) and ``.md`` into
``--output`` (default ``runs/bench``). A benchmark, never part of CI's test command.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    table,
    vst_bm3d,
    vst_nlm,
    write_outputs,
)

from livedenoise.checkpoint import DEFAULT_BACKBONE

SHIPPED = ("standard", "fast")
CLASSICAL = ("raw", "gaussian", "vst+nlm", "vst+bm3d")


@dataclass
class Pair:
    """One dev pair as scored here: the (cropped) noisy and clean images and the file the API reads."""

    set: str
    name: str
    noisy: np.ndarray
    clean: np.ndarray
    source: Path  # the noisy file (or its temporary crop) that denoise_dataset reads
    affine: bool


@dataclass
class Outcome:
    """What one method did to one pair."""

    output: np.ndarray | None
    seconds: float
    fit: dict | None = None
    warnings: list[str] | None = None
    noise_model: str = ""
    error: str = ""


def centre_crop(arr: np.ndarray, size: int | None) -> np.ndarray:
    """The centred ``size``² window (the whole image when ``size`` is None or larger)."""
    if size is None:
        return arr
    h, w = arr.shape[-2:]
    ch, cw = min(h, size), min(w, size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return arr[..., y0:y0 + ch, x0:x0 + cw]


def load_pairs(folder: Path, *, per_set: int | None, crop: int | None, scratch: Path,
               sets: set[str] | None = None) -> list[Pair]:
    """The pairs to score: the first ``per_set`` of each set (all when None; only ``sets`` when given), cropped to
    ``crop``.

    Uncropped pairs are read by the API from their own files; crops are written to ``scratch``.
    """
    import tifffile

    from livedenoise.training.pairs import load_pair_folder

    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    for p in sorted(load_pair_folder(folder), key=lambda p: (p.set or "", p.name)):
        s = p.set or "(root)"
        if (sets and s not in sets) or (per_set and seen.get(s, 0) >= per_set):
            continue
        seen[s] = seen.get(s, 0) + 1
        noisy, clean = np.asarray(p.noisy), np.asarray(p.clean)
        source = Path(p.noisy_path)
        if crop is not None and max(noisy.shape[-2:]) > crop:
            noisy, clean = centre_crop(noisy, crop), centre_crop(clean, crop)
            source = scratch / "inputs" / s / f"{p.name}_noisy.tif"
            source.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(source, np.ascontiguousarray(noisy))
        pairs.append(Pair(s, p.name, noisy, clean.astype(np.float32), source, s in DEV_AFFINE_SETS))
    return pairs


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
def fit_of_checkpoint(path: str | Path) -> dict:
    """Steps, best step, stop reason and ``adapted`` of an adapted checkpoint (its training metadata)."""
    from livedenoise.checkpoint import load_checkpoint

    tr = load_checkpoint(path).metadata.get("training", {})
    steps, best = int(tr.get("steps", 0)), int(tr.get("best_step", 0))
    adapted = tr.get("adapted")
    return {"steps": steps, "best_step": best, "stopped": tr.get("stopped", ""),
            "adapted": bool(adapted) if adapted is not None else (steps > 0 and best > 0),
            "initial_val_loss": tr.get("initial_val_loss"), "best_val_loss": tr.get("best_val_loss")}


def run_denoise(pair: Pair, model: str, out_dir: Path, *, adapt_s: float | None, device: str) -> Outcome:
    """The default ``livedenoise denoise`` path (optionally ``--adapt self``) on one pair's noisy image."""
    import tifffile

    from livedenoise.batch import denoise_dataset

    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"adapt": "self", "adapt_time_s": adapt_s} if adapt_s else {}
    summary = denoise_dataset([pair.source], out_dir, model=model, dtype="float32", progress=False, overwrite=True,
                              device=device, **kwargs)
    seconds = time.perf_counter() - t0
    item = summary.items[0]
    out = np.asarray(tifffile.imread(item.output), np.float32).reshape(pair.noisy.shape)
    fit = fit_of_run(item.output, summary.adapted) if adapt_s else None
    return Outcome(out, seconds, fit, list(summary.warnings), item.noise_model)


def fit_of_run(output: str | Path, saved: list[str]) -> dict | None:
    """The fine-tune record of an ``--adapt`` run: from the output's provenance, else the saved checkpoint.

    A fit that kept the base weights saves no checkpoint (the base model denoises instead), so the
    provenance, which records every fit, is read first.
    """
    from livedenoise.io import read_provenance

    fits = ((read_provenance(output) or {}).get("adapted") or {}).get("fits")
    if fits:
        f = fits[0]
        return {"steps": int(f.get("steps", 0)), "best_step": int(f.get("best_step", 0)),
                "stopped": f.get("stopped", ""), "adapted": bool(f.get("adapted")),
                "initial_val_loss": f.get("initial_val_loss"), "best_val_loss": f.get("best_val_loss")}
    return fit_of_checkpoint(saved[0]) if saved else None


def run_classical(method: str, pair: Pair) -> Outcome:
    """raw, gaussian, VST+NLM or VST+BM3D (the last raises PeerError without the peers environment)."""
    from livedenoise.evaluate import gaussian_baseline

    t0 = time.perf_counter()
    frame = pair.noisy
    if method == "raw":
        out = np.asarray(frame, np.float32)
    elif method == "gaussian":
        out = gaussian_baseline(frame)
    elif method == "vst+nlm":
        out = vst_nlm(frame)
    elif method == "vst+bm3d":
        (out,), secs = vst_bm3d([frame])
        return Outcome(out, float(secs[0]))  # BM3D's own time + transforms, not the subprocess start-up
    else:
        raise ValueError(method)
    return Outcome(out, time.perf_counter() - t0)


def plan_methods(backbones: list[str], adapt_backbones: list[str], models: list[Path], budget: float,
                 classical: list[str]) -> list[tuple[str, Callable[[Pair, Path], Outcome] | str]]:
    """(label, how) for every method of the run, in table order."""
    out: list[tuple[str, Any]] = [(m, m) for m in classical]
    for b in backbones:
        out.append((f"denoise {b}" + (" (default)" if b == DEFAULT_BACKBONE else ""), ("denoise", b, None)))
    for m in models:
        out.append((f"denoise {m.stem}", ("denoise", str(m), None)))
    for b in adapt_backbones:
        out.append((f"adapt self {b} ({budget:g} s)", ("denoise", b, budget)))
    return out


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def overall(rows: list[dict]) -> list[dict]:
    """Per method: mean PSNR/SSIM over sets (each set weighted equally), s/image, fits, sets won."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    per_set = {(s, m): [r for r in rows if r["set"] == s and r["method"] == m and r.get("psnr") is not None]
               for s in sets for m in methods}
    best_of_set = {}
    for s in sets:
        scored = [(m, finite_mean(r["psnr"] for r in per_set[(s, m)])) for m in methods]
        scored = [x for x in scored if math.isfinite(x[1])]
        if scored:
            best_of_set[s] = max(scored, key=lambda x: x[1])[0]
    out = []
    for m in methods:
        mine = [rs for s in sets if (rs := per_set[(s, m)])]
        fits = [r["fit"] for rs in mine for r in rs if r.get("fit")]
        agg = {"method": m, "sets": len(mine), "pairs": sum(len(rs) for rs in mine),
               "psnr": finite_mean(finite_mean(r["psnr"] for r in rs) for rs in mine),
               "ssim": finite_mean(finite_mean(r["ssim"] for r in rs) for rs in mine),
               "seconds": finite_mean(r["seconds"] for rs in mine for r in rs),
               "best_sets": sum(1 for v in best_of_set.values() if v == m),
               "warnings": sum(1 for rs in mine for r in rs if r.get("warnings"))}
        if fits:
            agg.update(fits=len(fits), adapted=sum(1 for f in fits if f["adapted"]),
                       steps=finite_mean(f["steps"] for f in fits), best_step=finite_mean(f["best_step"] for f in fits),
                       stopped=", ".join(sorted({f["stopped"] for f in fits if f["stopped"]})))
        out.append(agg)
    return out


def per_set_table(rows: list[dict]) -> str:
    """Sets as rows, methods as columns, ``PSNR / SSIM`` cells (means over the set's pairs)."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    body = []
    kept = False
    for s in sets:
        cells = [f"{s}{' (affine)' if s in DEV_AFFINE_SETS else ''}",
                 str(len({r['pair'] for r in rows if r['set'] == s}))]
        for m in methods:
            rs = [r for r in rows if r["set"] == s and r["method"] == m and r.get("psnr") is not None]
            mark = ""
            if rs and any(r.get("fit") and not r["fit"]["adapted"] for r in rs):
                mark, kept = " †", True
            cells.append(f"{finite_mean(r['psnr'] for r in rs):.2f} / {finite_mean(r['ssim'] for r in rs):.3f}{mark}"
                         if rs else "-")
        body.append(cells)
    note = ("\n\n† the fine-tune kept the backbone's weights (0 steps, or no validation beat the initial weights): "
            "this is the backbone, not an adapted model." if kept else "")
    return table(["set", "pairs", *methods], body) + note


def overall_table(rows: list[dict]) -> str:
    """One row per method: means over sets, sets where it scored the best PSNR, time, training record."""
    body = []
    for a in overall(rows):
        train = "-"
        if a.get("fits"):
            train = (f"{a['steps']:.0f} steps (best {a['best_step']:.0f}), {a['stopped']}; "
                     f"weights changed in {a['adapted']}/{a['fits']}")
        body.append([a["method"], f"{a['psnr']:.2f}", f"{a['ssim']:.3f}", f"{a['best_sets']}/{a['sets']}",
                     f"{a['seconds']:.1f}", train, str(a["warnings"]) if a["warnings"] else "-"])
    return table(["method", "PSNR (dB)", "SSIM", "best PSNR in sets", "s / image", "training", "warnings"], body)


def render(payload: dict) -> str:
    rows, cfg = payload["rows"], payload["config"]
    git = payload["machine"].get("git") or {}
    code = f"- code: commit {git.get('commit', '?')[:10]}" + (
        f" with uncommitted changes to {', '.join(git['uncommitted'])}" if git.get("uncommitted") else "")
    lines = [f"# Real dev pairs{' (quick)' if cfg['quick'] else ''}", "",
             f"- machine: {machine_line(payload['machine'])}", code, f"- command: `{cfg['command']}`",
             f"- data: `{cfg['pairs']}`, {cfg['per_set'] or 'every'} pair(s) per set, "
             + (f"centre crops of {cfg['crop']}²" if cfg["crop"] else "whole images"),
             f"- `adapt self`: `denoise_dataset(..., adapt='self', adapt_time_s={cfg['budget_s']:g})`; `denoise`: the "
             "default path (noise model fitted to each image), device " + str(cfg["device"]),
             "- metric: `livedenoise.metrics.score` against each pair's clean image; affine fit for "
             + ", ".join(DEV_AFFINE_SETS) + "; PSNR dB / SSIM; overall = mean over sets, each set weighted equally", ""]
    if rows:
        lines += ["## Overall", "", overall_table(rows), "", "## Per set (PSNR dB / SSIM)", "", per_set_table(rows), ""]
    fits = [r for r in rows if r.get("fit")]
    if fits:
        lines += ["Fine-tunes: " + "; ".join(f"{r['set']}/{r['pair']} {r['method']}: {r['fit']['steps']} steps "
                                             f"(best {r['fit']['best_step']}, {r['fit']['stopped']})"
                                             for r in fits), ""]
    warned = [r for r in rows if r.get("warnings")]
    if warned:
        lines += ["Warnings from `denoise`: " + "; ".join(f"{r['set']}/{r['pair']} {r['method']}: "
                                                          + " / ".join(w.split(': ', 1)[-1] for w in r["warnings"])
                                                          for r in warned), ""]
    if payload.get("failures"):
        lines += ["Not run: " + "; ".join(f"{k}: {v}" for k, v in payload["failures"].items()), ""]
    return "\n".join(lines)


def git_state() -> dict:
    """The commit the run used and the package files that differed from it (a result names its code)."""
    import subprocess

    from common import REPO

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "livedenoise", "simulators").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted": changed}


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from livedenoise.metrics import score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one pair per set, 256² centre crops, 15 s fine-tunes")
    ap.add_argument("--pairs", type=Path, default=REAL_PAIRS_DEV, help="pair folder (default: the shared dev pairs)")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder for dev-pairs[-quick].json/.md")
    ap.add_argument("--model", type=Path, action="append", default=[], metavar="PATH",
                    help="a candidate checkpoint to run through the default path as well (repeatable)")
    ap.add_argument("--backbones", default=",".join(SHIPPED), help="shipped backbones for `denoise` (comma-separated)")
    ap.add_argument("--adapt-backbones", help="backbones for `--adapt self` (default: the same as --backbones; "
                    "'none' to skip)")
    ap.add_argument("--budget", type=float, help="seconds of `--adapt self` fine-tuning per image (60; quick 15)")
    ap.add_argument("--per-set", type=int, help="pairs per set (quick 1; default all)")
    ap.add_argument("--crop", type=int, help="centre crop side in pixels (quick 256; default whole images)")
    ap.add_argument("--classical", default=",".join(CLASSICAL), help="classical methods, comma-separated subset of "
                    + ", ".join(CLASSICAL))
    ap.add_argument("--sets", help="only these sets (comma-separated; default all)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (for the livedenoise methods)")
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.ERROR)
    if not args.pairs.is_dir():
        ap.error(f"pair folder not found: {args.pairs}")
    for m in args.model:
        if not m.is_file():
            ap.error(f"--model {m}: no such file")
    budget = args.budget or (15.0 if args.quick else 60.0)
    per_set = args.per_set if args.per_set is not None else (1 if args.quick else None)
    crop = args.crop if args.crop is not None else (256 if args.quick else None)
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    adapt_spec = args.adapt_backbones if args.adapt_backbones is not None else args.backbones
    adapt_backbones = [] if adapt_spec == "none" else [b.strip() for b in adapt_spec.split(",") if b.strip()]
    classical = [c.strip() for c in args.classical.split(",") if c.strip()]
    unknown = set(classical) - set(CLASSICAL)
    if unknown:
        ap.error(f"unknown classical method(s): {', '.join(sorted(unknown))}")
    load_start = load_average()
    failures: dict[str, str] = {}
    if "vst+bm3d" in classical and peers_python() is None:
        failures["vst+bm3d"] = "not installed: run `bash benchmarks/setup_peers.sh`"
        classical.remove("vst+bm3d")
    methods = plan_methods(backbones, adapt_backbones, args.model, budget, classical)
    rows: list[dict] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="livedenoise-dev-pairs-") as tmp:
        scratch = Path(tmp)
        wanted = {x.strip() for x in args.sets.split(",") if x.strip()} if args.sets else None
        pairs = load_pairs(args.pairs, per_set=per_set, crop=crop, scratch=scratch, sets=wanted)
        if not pairs:
            ap.error(f"no pairs selected in {args.pairs}" + (f" for --sets {args.sets}" if args.sets else ""))
        for pair in pairs:
            for label, how in methods:
                print(f"[dev-pairs] {pair.set}/{pair.name}: {label}", flush=True)
                try:
                    if isinstance(how, tuple):
                        _, model, adapt_s = how
                        out_dir = scratch / "out" / f"{pair.set}-{pair.name}-{len(rows)}"
                        res = run_denoise(pair, model, out_dir, adapt_s=adapt_s, device=args.device)
                    else:
                        res = run_classical(how, pair)
                except PeerError as exc:
                    failures[label] = str(exc)
                    print(f"  failed: {exc}", flush=True)
                    continue
                s = score(pair.clean, res.output, affine=pair.affine)
                rows.append({"set": pair.set, "pair": pair.name, "method": label, "affine": pair.affine,
                             "shape": list(pair.noisy.shape), "dtype": str(pair.noisy.dtype), "psnr": s.psnr,
                             "ssim": s.ssim, "mse": s.mse, "seconds": res.seconds, "fit": res.fit,
                             "warnings": res.warnings or [], "noise_model": res.noise_model})
                if res.fit:
                    print(f"  {res.fit['steps']} steps (best {res.fit['best_step']}), {res.fit['stopped']}", flush=True)
    info = {**machine(), "load_average_start": load_start, "git": git_state()}
    payload = {"machine": info, "seconds": time.perf_counter() - t_start,
               "config": {"quick": args.quick, "pairs": str(args.pairs), "per_set": per_set, "crop": crop,
                          "budget_s": budget, "sets": sorted(wanted) if wanted else None, "backbones": backbones,
                          "adapt_backbones": adapt_backbones,
                          "models": [str(m) for m in args.model], "classical": classical, "device": args.device,
                          "command": "python benchmarks/bench_dev_pairs.py " + " ".join(argv if argv is not None
                                                                                         else sys.argv[1:])},
               "rows": rows, "overall": overall(rows), "failures": failures}
    name = "dev-pairs" + ("-quick" if args.quick else "")
    write_outputs(args.output, name, payload, "(rendering)\n")  # the measurements survive a rendering error
    md = render(payload)
    jp, mp = write_outputs(args.output, name, payload, md)
    print(md)
    print(f"wrote {jp} and {mp} ({payload['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
