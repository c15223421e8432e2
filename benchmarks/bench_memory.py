"""Working memory of one whole-frame inference pass, measured against the estimate the planners use.

    python benchmarks/bench_memory.py                 # fast, standard, temporal, cnnt at 1024² and 2048²

``Denoiser`` (CPU) runs a frame whole while ``livedenoise.models.activation_bytes_per_pixel(model)`` x pixels
fits ``inference.CPU_ACTIVATION_BYTES``, and the batch planner sizes blocks with the same estimate. This
measures what a pass really takes: each case runs in a fresh process that loads the model, warms up on a
small frame, then denoises one uint16 frame whole (``pixel_budget`` = the frame); the figure is the growth
of the process's peak resident memory during that call (``ru_maxrss``), which includes the call's input,
normalised and output copies. ``ratio`` = measured / estimated: below 1 means the estimate is safe.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, machine, machine_line, publish, table

_CHILD = r"""
import json, resource, sys
import numpy as np
from livedenoise.inference import Denoiser
from livedenoise.models import activation_bytes_per_pixel, build_preset
from livedenoise.normalization import Normalizer
name, side = sys.argv[1], int(sys.argv[2])
if name in ("fast", "standard", "temporal"):
    source = name
else:
    model, _, _ = build_preset(name)
    source = (model, Normalizer(offset=100, gain=0.45, noise_b=2.0, vst=True, scale=10.0))
den = Denoiser(source, device="cpu", pixel_budget=side * side * 8)
frame = (np.random.default_rng(0).poisson(50, (side, side)) + 100).astype(np.uint16)
den.denoise(frame[:64, :64])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
den.denoise(frame)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
work = den.model.frame if hasattr(den.model, "frame") else den.model
print(json.dumps({"model": name, "side": side, "bytes": after - before,
                  "estimate_per_pixel": activation_bytes_per_pixel(work),
                  "first_width": int(getattr(work, "widths", [0])[0]) if hasattr(work, "widths") else None}))
"""


def measure(name: str, side: int) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, name, str(side)], capture_output=True, text=True, timeout=900,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    if res.returncode != 0:
        raise SystemExit(f"{name} {side}²: {res.stderr[-1500:]}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    px = side * side
    row["bytes_per_pixel"] = row["bytes"] / px
    row["ratio"] = row["bytes_per_pixel"] / row["estimate_per_pixel"]
    print(f"[memory] {name} {side}²: {row['bytes'] / 1e6:.0f} MB, {row['bytes_per_pixel']:.0f} B/px "
          f"(estimate {row['estimate_per_pixel']} B/px, ratio {row['ratio']:.2f})", flush=True)
    return row


def render(payload: dict) -> str:
    lines = ["# Working memory of a whole-frame pass (CPU, fp32)", "", f"- machine: {machine_line(payload['machine'])}",
             "- growth of the peak resident memory during one `Denoiser.denoise` call on a frame run whole; estimate: "
             "`livedenoise.models.activation_bytes_per_pixel`; ratio = measured / estimate", ""]
    body = [[r["model"], f"{r['side']}²", f"{r['bytes'] / 1e6:.0f}", f"{r['bytes_per_pixel']:.0f}",
             str(r["estimate_per_pixel"]), f"{r['ratio']:.2f}"] for r in payload["rows"]]
    lines += [table(["model", "frame", "MB", "B / px", "estimate B / px", "ratio"], body), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="fast,standard,temporal,cnnt")
    ap.add_argument("--sizes", default="1024,2048")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    rows = [measure(m.strip(), int(s)) for m in args.models.split(",") for s in args.sizes.split(",")]
    payload = {"machine": machine(), "rows": rows,
               "command": "python benchmarks/bench_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    publish(args.output, "memory", payload, render(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
