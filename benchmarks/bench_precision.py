"""What bfloat16 inference costs in quality and saves in time, against the float32 reference, in one run.

    python benchmarks/bench_precision.py                 # fast and standard, dev pairs + simulator, 2 threads
    python benchmarks/bench_precision.py --quick         # fast only, 256² crops, fewer cases

For every model and precision the same noisy images go through the product's ``Denoiser`` (noise model
fitted to each image, as ``livedenoise denoise`` does) and are scored with ``livedenoise.metrics.score``:

* real dev pairs (``../shared/data/real_pairs_dev``, read in place): the first pair of each set, against its
  clean image (affine fit for the sets MANIFEST.md marks as independently scaled);
* the project simulator (filaments, Andor Zyla 4.2 camera model) at 1, 5, 20, 100 and 1,000 photons,
  against the noise-free truth without the camera's fixed pattern.

Beside the PSNR/SSIM of each precision it reports how far the bf16 output is from the fp32 output:
the largest absolute difference as a fraction of the fp32 output's range (the issue's equivalence
criterion is 1e-3), and the root-mean-square difference. Timing: median milliseconds per 512² frame of
``Denoiser.denoise``, the precisions interleaved so that drifting load hits both alike.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_OUTPUT,
    DEV_AFFINE_SETS,
    REAL_PAIRS_DEV,
    finite_mean,
    load_average,
    machine,
    machine_line,
    publish,
    table,
)

PRECISIONS = ("fp32", "bf16")


def cases(quick: bool, pairs: Path) -> list[dict]:
    """Noisy images with their references: the first dev pair of each set, then simulated peaks."""
    from livedenoise.evaluate import SimulatedTask
    from livedenoise.evaluate.real_pairs import centre_crop
    from livedenoise.training.pairs import load_pair_folder

    out: list[dict] = []
    if pairs.is_dir():
        seen: set[str] = set()
        for p in load_pair_folder(pairs):
            if p.set in seen:
                continue
            seen.add(p.set)
            crop = 256 if quick else None
            out.append({"name": p.set, "kind": "real", "noisy": centre_crop(np.asarray(p.noisy), crop),
                        "reference": centre_crop(np.asarray(p.clean), crop).astype(np.float32),
                        "affine": p.set in DEV_AFFINE_SETS})
    task = SimulatedTask("filaments", 128 if quick else 256)
    for peak in ((5.0, 100.0) if quick else (1.0, 5.0, 20.0, 100.0, 1000.0)):
        noisy, _ = task.test_set(peak, 0, 1)
        flat = task.test_truth_flat(peak, 0, 1)
        out.append({"name": f"sim {peak:g} photons", "kind": "simulated", "noisy": noisy[0],
                    "reference": np.asarray(flat[0], np.float32), "affine": False})
    return out


def time_precisions(model: str, precisions: tuple[str, ...], repeats: int, size: int = 512) -> dict[str, float]:
    """Median ms per ``size``² frame for each precision, interleaved."""
    from livedenoise.evaluate import SimulatedTask, with_normalizer
    from livedenoise.inference import Denoiser
    from livedenoise.modelspec import load_model_spec

    frame = SimulatedTask("filaments", size).test_set(20.0, 1, 1)[0][0]
    ckpt = with_normalizer(load_model_spec(model, device="cpu"), [frame])
    dens = {p: Denoiser(ckpt, device="cpu", precision=p) for p in precisions}
    for den in dens.values():  # warm-up: oneDNN picks its kernels on the first calls
        den.denoise(frame)
        den.denoise(frame)
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(repeats):
        for p, den in dens.items():
            t0 = time.perf_counter()
            den.denoise(frame)
            times[p].append(1000 * (time.perf_counter() - t0))
    return {p: float(np.median(v)) for p, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    import logging

    import torch

    from livedenoise.device import configure_cpu_threads
    from livedenoise.evaluate import with_normalizer
    from livedenoise.inference import Denoiser
    from livedenoise.metrics import score
    from livedenoise.modelspec import load_model_spec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast model only, 256² crops, two simulated peaks")
    ap.add_argument("--models", help="comma-separated presets (default: fast,standard; --quick: fast)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10, help="timed frames per precision")
    ap.add_argument("--pairs", type=Path, default=REAL_PAIRS_DEV)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.WARNING)
    configure_cpu_threads(args.threads)
    load_start = load_average()
    models = (args.models or ("fast" if args.quick else "fast,standard")).split(",")
    data = cases(args.quick, args.pairs)
    rows: list[dict] = []
    speed: dict[str, dict[str, float]] = {}
    for model in models:
        base = load_model_spec(model, device="cpu")
        for case in data:
            ckpt = with_normalizer(base, [case["noisy"]])
            outs = {p: Denoiser(ckpt, device="cpu", precision=p).denoise(case["noisy"]) for p in PRECISIONS}
            ref32 = outs["fp32"]
            span = float(ref32.max() - ref32.min()) or 1.0
            for p, out in outs.items():
                s = score(case["reference"], out, affine=case["affine"])
                diff = np.abs(out.astype(np.float64) - ref32)
                rows.append({"model": model, "case": case["name"], "kind": case["kind"], "precision": p,
                             "psnr": s.psnr, "ssim": s.ssim, "max_diff_of_range": float(diff.max()) / span,
                             "rms_diff_of_range": float(np.sqrt(np.mean(diff ** 2))) / span,
                             "shape": list(case["noisy"].shape)})
            print(f"[precision] {model} {case['name']}: fp32 {rows[-2]['psnr']:.2f} dB, "
                  f"bf16 {rows[-1]['psnr']:.2f} dB, "
                  f"max diff {rows[-1]['max_diff_of_range']:.1e} of the range", flush=True)
        speed[model] = time_precisions(model, PRECISIONS, args.repeats)
        print(f"[precision] {model} ms per 512² frame: {speed[model]}", flush=True)
    info = {**machine(), "load_average_start": load_start, "threads": torch.get_num_threads(),
            "bf16_supported_by_onednn": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    command = "python benchmarks/bench_precision.py" + (" --quick" if args.quick else "") + f" --threads {args.threads}"
    payload = {"machine": info, "quick": args.quick, "models": models, "rows": rows, "ms_per_512": speed,
               "command": command}
    publish(args.output, "precision" + ("-quick" if args.quick else ""), payload, render(payload))
    return 0


def summary_tables(payload: dict) -> str:
    """Quality cost per model and kind of data, then ms per 512² frame (the README shows these two)."""
    rows, speed = payload["rows"], payload["ms_per_512"]
    body = []
    for model in payload["models"]:
        for kind in ("real", "simulated"):
            sel = [r for r in rows if r["model"] == model and r["kind"] == kind]
            if not sel:
                continue
            by = {p: [r for r in sel if r["precision"] == p] for p in PRECISIONS}
            d = [b["psnr"] - a["psnr"] for a, b in zip(by["fp32"], by["bf16"], strict=True)]
            body.append([model, kind, len(by["fp32"]), f"{finite_mean(r['psnr'] for r in by['fp32']):.3f}",
                         f"{finite_mean(r['psnr'] for r in by['bf16']):.3f}", f"{np.mean(d):+.3f}",
                         f"{min(d):+.3f}", f"{max(r['max_diff_of_range'] for r in by['bf16']):.1e}",
                         f"{max(r['rms_diff_of_range'] for r in by['bf16']):.1e}"])
    return "\n".join([
        table(["model", "data", "images", "fp32 PSNR", "bf16 PSNR", "mean Δ dB", "worst Δ dB", "max |Δ| / range",
               "rms Δ / range"], body), "",
        table(["model", "fp32 ms / 512²", "bf16 ms / 512²", "speed-up"],
              [[m, f"{s['fp32']:.0f}", f"{s['bf16']:.0f}", f"{s['fp32'] / s['bf16']:.2f}x"]
               for m, s in speed.items()])])


def render(payload: dict) -> str:
    rows = payload["rows"]
    lines = ["# bf16 against fp32 inference", "", f"- machine: {machine_line(payload['machine'])}", "",
             summary_tables(payload), "", "Per image (PSNR dB fp32 / bf16, max |Δ| / range):", ""]
    per = []
    for model in payload["models"]:
        for case in dict.fromkeys(r["case"] for r in rows if r["model"] == model):
            a, b = (next(r for r in rows if r["model"] == model and r["case"] == case and r["precision"] == p)
                    for p in PRECISIONS)
            per.append([model, case, f"{a['psnr']:.2f} / {b['psnr']:.2f}", f"{b['max_diff_of_range']:.1e}"])
    lines += [table(["model", "image", "PSNR fp32 / bf16", "max |Δ| / range"], per), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
