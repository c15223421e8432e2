"""The temporal fusion's blur: the shipped shifted-sum implementation against the one-channel convolution it replaced.

    python benchmarks/bench_fusion_blur.py                 # 512² and 2048², 4 neighbours, 2 threads
    python benchmarks/bench_fusion_blur.py --threads 1

The fusion's agreement test blurs each neighbour's squared difference from the reference frame
(``MotionAdaptiveFusion._blur``: a separable Gaussian, replicated borders). Until 2026-12-05 that was two
``conv2d`` calls on a one-channel tensor, which a CPU runs far below its arithmetic rate; it is now a weighted sum of
shifted views of the padded frame. Both are timed here on the same input, interleaved, with the largest difference
between them (the equivalence is also a test, ``tests/test_temporal.py``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, machine, machine_line, publish, table


def conv2d_blur(fusion, x):
    """The previous implementation: the separable kernel as two one-channel convolutions."""
    import torch
    import torch.nn.functional as F

    r, k = fusion.radius, torch.tensor(fusion._blur.taps, dtype=x.dtype).view(1, 1, 1, -1)
    y = F.conv2d(F.pad(x[:, None], (r, r, 0, 0), mode="replicate"), k)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.transpose(-1, -2))[:, 0]


def main(argv: list[str] | None = None) -> int:
    import torch

    from livedenoise.device import configure_cpu_threads
    from livedenoise.models.temporal import MotionAdaptiveFusion

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="512,2048")
    ap.add_argument("--neighbours", type=int, default=4, help="frames blurred per call (a live window's)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    configure_cpu_threads(args.threads)
    fusion = MotionAdaptiveFusion()
    rows, results = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        x = torch.rand(args.neighbours, size, size, generator=torch.Generator().manual_seed(size))
        runs = {"conv2d (before)": lambda x=x: conv2d_blur(fusion, x),
                "shifted sums (shipped)": lambda x=x: fusion._blur(x)}
        diff = float((runs["conv2d (before)"]() - runs["shifted sums (shipped)"]()).abs().max())
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.inference_mode():
            for _ in range(args.repeats):
                for name, run in runs.items():
                    t0 = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - t0)
        ms = {k: 1000 * statistics.median(v) / args.neighbours for k, v in times.items()}
        results.append({"size": size, "ms_per_frame": ms, "max_abs_difference": diff})
        rows.append([f"{size}²", f"{ms['conv2d (before)']:.1f}", f"{ms['shifted sums (shipped)']:.1f}",
                     f"{ms['conv2d (before)'] / ms['shifted sums (shipped)']:.1f}x", f"{diff:.1e}"])
    info = machine()
    md = "\n".join([f"# The fusion's blur, {args.neighbours} frames per call, {args.threads} thread(s)", "",
                    f"- machine: {machine_line(info)}", "",
                    table(["frame", "conv2d ms / frame", "shifted sums ms / frame", "speed-up", "max |difference|"],
                          rows), ""])
    publish(args.output, "fusion-blur", {"machine": info, "threads": args.threads, "neighbours": args.neighbours,
                                         "repeats": args.repeats, "results": results,
                                         "command": f"python benchmarks/bench_fusion_blur.py --threads {args.threads}"},
            md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
