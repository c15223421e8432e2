"""Throughput and peak memory of `livedenoise denoise` (batch, out-of-core) per shipped model, 1 vs 2 workers.

Each configuration runs in its own Python process, so the peak resident memory (ru_maxrss) is that
run's alone; the dataset is a uint16 TIFF stack of simulated-camera-like noise written once.
Workers are local threads (``--workers``) or, with ``--cluster``, dask.distributed worker
processes of a LocalCluster (then the peak is the driver's; workers hold the blocks).

    python benchmarks/bench_batch.py --quick            # about a minute on 2 CPU cores
    python benchmarks/bench_batch.py --frames 256 --size 1024 --budget 2GB --json out.json

Models: the shipped backbones (``standard``, ``fast``, ``lite``); when one is not installed, an untrained
network of the same preset is timed instead (same architecture, same cost) and marked so.

``--malloc keep system`` runs every configuration with freed memory kept within a block (livedenoise's default,
``livedenoise.cpu_memory``) and with malloc's own settings (``LIVEDENOISE_MALLOC=system``), alternated over
``--rounds``; the table gives the median of the rounds. ``--precisions fp32 bf16`` runs every configuration with
each ``denoise --precision`` (bf16: the network's weights and activations in bfloat16 on a CPU that has it).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

CHILD = r"""
import json, os, resource, sys, time
args = json.loads(sys.argv[1])
import torch
if args["threads"]:
    torch.set_num_threads(args["threads"])
from livedenoise.batch import denoise_dataset
cluster = client = None
scheduler = None
if args["cluster"]:
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=args["workers"], threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    scheduler = cluster.scheduler_address
    per_worker = max(1, (os.cpu_count() or 1) // args["workers"])  # no oversubscription across worker processes
    client.run(lambda: __import__("torch").set_num_threads(per_worker))
t0 = time.perf_counter()
s = denoise_dataset([args["input"]], args["output"], model=args["model"], memory_budget=args["budget"],
                    progress=False, device=args["device"], workers=None if args["cluster"] else args["workers"],
                    scheduler=scheduler, overwrite=True, precision=args.get("precision", "auto"),
                    compiled=args.get("compiled", False))
wall = time.perf_counter() - t0
if client is not None:
    client.close(); cluster.close()
print(json.dumps({"wall_s": wall, "mpx": s.megapixels, "mpx_per_s": s.megapixels / wall,
                  "blocks": s.items[0].blocks, "block_shape": list(s.items[0].block_shape),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_dataset(path: Path, frames: int, size: int) -> None:
    """A uint16 stack with sCMOS-like offset + Poisson noise on a smooth pattern, written frame by frame."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    signal = 20 + 200 * (np.sin(12 * xx) * np.cos(9 * yy)) ** 2
    with tifffile.TiffWriter(path) as tw:
        for _ in range(frames):
            tw.write((rng.poisson(signal) + 100).astype(np.uint16), contiguous=True, metadata={"axes": "TYX"})


def model_path(name: str, folder: Path) -> tuple[str, str]:
    """The shipped backbone's path, or an untrained network of the same preset saved to ``folder``."""
    from livedenoise.checkpoint import backbone_path, save_checkpoint
    from livedenoise.models import build_preset
    from livedenoise.normalization import Normalizer

    shipped = backbone_path(name)
    if shipped.is_file():
        return str(shipped), name
    model, arch, kwargs = build_preset(name)
    path = folder / f"untrained-{name}.safetensors"
    save_checkpoint(path, model, arch=arch, arch_kwargs=kwargs,
                    normalizer=Normalizer(offset=100.0, gain=1.0, scale=30.0), name=f"{name} (untrained)")
    return str(path), f"{name} (untrained preset)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small dataset (64 frames of 256x256, budget 260MB)")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=512, help="frame side in pixels")
    parser.add_argument("--budget", default="1GB", help="--memory-budget of each run")
    parser.add_argument("--models", nargs="+", default=["fast", "standard"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--cluster", action="store_true", help="workers are dask LocalCluster processes, not threads")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--malloc", nargs="+", choices=["keep", "system"], default=["keep"],
                        help="LIVEDENOISE_MALLOC of each run (both: alternated, every configuration)")
    parser.add_argument("--precisions", nargs="+", choices=["auto", "fp32", "bf16"], default=["auto"],
                        help="the network's arithmetic of each run (denoise --precision; bf16 on a CPU with native "
                             "bfloat16)")
    parser.add_argument("--compiled", nargs="+", choices=["off", "on"], default=["off"],
                        help="denoise --compile off and/or on for each run (torch.compile; its compilation is in the "
                             "job's wall time)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every configuration and malloc setting")
    parser.add_argument("--json", type=Path, default=Path("bench_batch.json"), help="where to write the results")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.size, args.budget = 64, 256, "260MB"

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "input.tif"
        make_dataset(data, args.frames, args.size)
        for round_ in range(args.rounds):
            for name in args.models:
                path, label = model_path(name, tmp_path)
                for workers, precision, compiled in itertools.product(args.workers, args.precisions, args.compiled):
                    for malloc in (args.malloc if round_ % 2 == 0 else args.malloc[::-1]):
                        spec = {"precision": precision, "input": str(data), "compiled": compiled == "on",
                                "output": str(tmp_path / f"out-{name}-{workers}-{precision}-{malloc}-{compiled}"),
                                "model": path, "budget": args.budget, "workers": workers, "cluster": args.cluster,
                                "threads": args.threads, "device": args.device}
                        env = {**os.environ, "LIVEDENOISE_MALLOC": malloc}
                        t0 = time.perf_counter()
                        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True,
                                              text=True, env=env)
                        if proc.returncode != 0:
                            print(proc.stderr[-3000:], file=sys.stderr)
                            return proc.returncode
                        res = json.loads(proc.stdout.strip().splitlines()[-1])
                        rows.append({"model": label, "workers": workers, "precision": precision,
                                     "compiled": compiled == "on",
                                     "mode": "cluster" if args.cluster else "threads", "malloc": malloc,
                                     "round": round_, "frames": args.frames, "size": args.size,
                                     "budget": args.budget, "process_s": time.perf_counter() - t0, **res})
                        r = rows[-1]
                        print(f"{label:28s} workers={workers} {precision:4s} compiled={compiled:3s} malloc={malloc:6s} "
                              f"{r['mpx_per_s']:7.2f} Mpx/s  "
                              f"peak RSS {r['peak_rss_mb']:7.0f} MB  "
                              f"{r['blocks']} blocks of {tuple(r['block_shape'])}", flush=True)

    result = {"machine": machine(), "frames": args.frames, "size": args.size, "budget": args.budget,
              "command": "python benchmarks/bench_batch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "summary": summarise(rows), "results": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(render(result))
    print(f"wrote {args.json}")
    return 0


def summarise(rows: list[dict]) -> list[dict]:
    """The median over rounds of every (model, workers, malloc) configuration, in the order they first ran."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["workers"], r["mode"], r.get("malloc", "keep"), r.get("precision", "auto"),
                           r.get("compiled", False)), []).append(r)
    return [{"model": model, "workers": workers, "mode": mode, "malloc": malloc, "precision": precision,
             "compiled": compiled, "runs": len(runs),
             "mpx_per_s": statistics.median(r["mpx_per_s"] for r in runs),
             "mpx_per_s_all": [round(r["mpx_per_s"], 3) for r in runs],
             "wall_s": statistics.median(r["wall_s"] for r in runs),
             "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
             "blocks": runs[0]["blocks"], "block_shape": runs[0]["block_shape"]}
            for (model, workers, mode, malloc, precision, compiled), runs in groups.items()]


def render(result: dict) -> str:
    """Markdown table of the summary (one row per model, workers and malloc setting)."""
    what = {"keep": "kept within a block", "system": "malloc's own"}
    # the precision column only where a run chose one (results written before --precisions render as they did)
    precisions = any(r.get("precision", "auto") != "auto" for r in result["summary"])
    compiled = any(r.get("compiled") for r in result["summary"])  # the column only in runs that compiled
    lines = [f"{result['frames']} frames of {result['size']}² uint16, `--memory-budget {result['budget']}`; "
             "Mpx/s = the job's pixels over its wall time (noise fit and output files included), median of the runs; "
             "peak RSS of the job's process.", "",
             "| model | block threads |" + (" precision |" if precisions else "") + (" compiled |" if compiled else "")
             + " freed memory | runs | Mpx/s | wall s | peak RSS (MB) | blocks |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if precisions else "") + ("---|" if compiled else "")]
    for r in result["summary"]:
        lines.append(f"| {r['model']} | {r['workers']} |" + (f" {r.get('precision', 'auto')} |" if precisions else "")
                     + ((" yes |" if r.get("compiled") else " no |") if compiled else "")
                     + f" {what[r['malloc']]} | {r['runs']} | {r['mpx_per_s']:.2f} | "
                     f"{r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['blocks']} |")
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    sys.exit(main())
