"""Inference speed of another checkout (an earlier commit), for a baseline measured in the same session.

    git worktree add /tmp/base <commit>
    python benchmarks/speed_of_checkout.py /tmp/base -o runs/bench/baseline.json
    python benchmarks/bench_speed.py --only inference --models fast,standard,temporal --layouts channels-last

    python benchmarks/speed_of_checkout.py /tmp/base --section finetune --finetune-budget 60 -o runs/bench/ft.json
    python benchmarks/bench_speed.py --only finetune --layouts channels-last --finetune-budget 60

Runs that checkout's own ``benchmarks/bench_speed.bench_inference`` (fast, standard, temporal; 512² and 2048²;
channels-last), or with ``--section finetune`` its ``bench_finetune`` (self-supervised fine-tuning of the fast
backbone on one simulated 256² frame, channels-last, each ``--train-precisions`` x ``--adapt-layers``), with that
checkout's ``livedenoise`` (its folder first on the path, so the installed one is not imported), and writes the rows
with the commit they measured. A checkout from before 2026-12-03's channels-last layout (whose ``bench_finetune``
knew neither layouts nor precisions) runs :mod:`legacy_finetune` instead: its one way of fine-tuning, scored as
today's. Alternate the two commands to see how much of a difference is load.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import checkout_commit, checkout_env

_CHILD = r"""
import json, sys
import bench_speed
from common import machine
import livedenoise
assert livedenoise.__file__.startswith(sys.argv[1]), livedenoise.__file__
if sys.argv[2] == "finetune":
    budget, precisions, layers = float(sys.argv[3]), sys.argv[4].split(","), sys.argv[5].split(",")
    import inspect
    if "precision" in inspect.signature(bench_speed.bench_finetune).parameters:
        rows = [bench_speed.bench_finetune(256, budget, "cpu", True, p, a) for p in precisions for a in layers]
    else:  # before 2026-12-03's channels-last layout: fp32, every weight, NCHW, and no PSNR of its own
        import legacy_finetune
        rows = [legacy_finetune.bench(256, budget)]
    print("@@" + json.dumps({"machine": machine(), "finetune": rows}))
else:
    rows = bench_speed.bench_inference(sys.argv[3].split(","), [512, 2048], ["cpu"], 5, layouts=(True,))
    print("@@" + json.dumps({"machine": machine(), "inference": rows}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", type=Path, help="a checkout (git worktree) of the commit to measure")
    ap.add_argument("--section", choices=("inference", "finetune"), default="inference")
    ap.add_argument("--models", default="fast,standard,temporal", help="inference: presets, comma-separated")
    ap.add_argument("--finetune-budget", type=float, default=60.0, help="finetune: seconds per fine-tune")
    ap.add_argument("--train-precisions", default="fp32", help="finetune: fp32 and/or bf16, comma-separated")
    ap.add_argument("--adapt-layers", default="all", help="finetune: all, decoder, last, bias, comma-separated")
    ap.add_argument("-o", "--output", type=Path, required=True, help="JSON file to write")
    args = ap.parse_args(argv)
    root = args.checkout.resolve()
    if not (root / "livedenoise" / "__init__.py").is_file() or not (root / "benchmarks" / "bench_speed.py").is_file():
        raise SystemExit(f"{root}: not a livedenoise checkout with benchmarks/bench_speed.py")
    env = checkout_env(root, root / "benchmarks", Path(__file__).resolve().parent)  # then legacy_finetune
    section = ([args.section, str(args.finetune_budget), args.train_precisions, args.adapt_layers]
               if args.section == "finetune" else [args.section, args.models])
    res = subprocess.run([sys.executable, "-c", _CHILD, str(root), *section], cwd=root, env=env, text=True,
                         capture_output=True)
    sys.stderr.write(res.stderr[-3000:] if res.returncode else "")
    if res.returncode != 0:
        return res.returncode
    print("\n".join(line for line in res.stdout.splitlines() if line.startswith("[speed]")))
    payload = json.loads(next(line[2:] for line in res.stdout.splitlines() if line.startswith("@@")))
    commit = checkout_commit(root)
    payload.update(commit=commit, command="python benchmarks/speed_of_checkout.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.output} ({commit[:10]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
