"""Inference speed of another checkout (an earlier commit), for a baseline measured in the same session.

    git worktree add /tmp/base <commit>
    python benchmarks/speed_of_checkout.py /tmp/base -o runs/bench/baseline.json
    python benchmarks/bench_speed.py --only inference --models fast,standard,temporal --layouts channels-last

Runs that checkout's own ``benchmarks/bench_speed.bench_inference`` (fast, standard, temporal; 512² and 2048²;
channels-last) with that checkout's ``livedenoise`` (its folder first on the path, so the installed one is
not imported), and writes the rows with the commit they measured. Alternate the two commands to see how
much of a difference is load.
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
rows = bench_speed.bench_inference(sys.argv[2].split(","), [512, 2048], ["cpu"], 5, layouts=(True,))
print("@@" + json.dumps({"machine": machine(), "inference": rows}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", type=Path, help="a checkout (git worktree) of the commit to measure")
    ap.add_argument("--models", default="fast,standard,temporal")
    ap.add_argument("-o", "--output", type=Path, required=True, help="JSON file to write")
    args = ap.parse_args(argv)
    root = args.checkout.resolve()
    if not (root / "livedenoise" / "__init__.py").is_file() or not (root / "benchmarks" / "bench_speed.py").is_file():
        raise SystemExit(f"{root}: not a livedenoise checkout with benchmarks/bench_speed.py")
    env = checkout_env(root, root / "benchmarks")
    res = subprocess.run([sys.executable, "-c", _CHILD, str(root), args.models], cwd=root, env=env, text=True,
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
