"""Run `livedenoise demo` with the swap forced, printing the real held-out MSEs: how good was the rejected model?

    python benchmarks/results/2026-12-05-pairs-shift/demo/forced_swap.py --config .../sharp.toml -o OUT
"""
import sys

import livedenoise.acquisition.session as session
from livedenoise.cli import main

real_scores = session.LiveSession._swap_scores


def forced(self, *args, **kwargs):
    backbone, adapted = real_scores(self, *args, **kwargs)
    print(f"REAL held-out MSE backbone {backbone:.5f} adapted {adapted:.5f}", flush=True)
    return backbone, 0.0


session.LiveSession._swap_scores = forced
raise SystemExit(main(["demo", *sys.argv[1:]]))
