"""Probe: does one pass need the transform's bias correction of its kept outputs (``expected_gat_torch``)? The
same time-lapses with and without it, and its cost per 512² frame.

Run from the repository root: ``python benchmarks/results/2026-12-06-live-one-pass/variants-probe/expected.py``.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from bench_temporal import network, real_structure_series, real_structures, score_series, simulate_series

import livedenoise.one_pass as op
from livedenoise.normalization import Normalizer

torch.set_num_threads(2)
sim_cases = [(p, o) for p in (5.0, 20.0, 100.0) for o in ("confocal", "widefield")]
cases = [simulate_series(p, o, 16, 256, seed=424_000 + i) for i, (p, o) in enumerate(sim_cases)]
paths = real_structures(Path("../shared/data/real_pairs_dev"))
real_cases = [(p, path) for path in paths for p in (5.0, 20.0)]
cases += [real_structure_series(path, p, 16, 256, seed=525_000 + i) for i, (p, path) in enumerate(real_cases)]
res: dict[str, list] = {"with": [], "without": []}
orig = op.Normalizer.expected_gat_torch
for s in cases:
    for k in ("with", "without"):
        op.Normalizer.expected_gat_torch = orig if k == "with" else (lambda self, y: y)
        out, _, _ = network("temporal", s.noisy, "live", one_pass=True)
        sc = score_series(s, out)
        res[k].append((sc["psnr"], sc["psnr_moving"], sc["psnr_rest"]))
op.Normalizer.expected_gat_torch = orig
for k, v in res.items():
    a = np.array(v)
    print(k, "sim", np.round(a[:6].mean(0), 3), "real", np.round(a[6:].mean(0), 3))
n = Normalizer(noise_a=1.0, noise_b=4.0, scale=10.0)
y = torch.rand(512, 512) * 3
for _ in range(3):
    n.expected_gat_torch(y)
t0 = time.perf_counter()
for _ in range(20):
    n.expected_gat_torch(y)
print("expected_gat 512² ms", (time.perf_counter() - t0) / 20 * 1000)
