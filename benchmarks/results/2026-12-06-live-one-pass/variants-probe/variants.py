"""Probe: one pass with and without the fusion's trust per lag, and its agreement scale h, on the simulator's
time-lapses of bench_temporal.py, the real-structure ones, and offline time-lapses of the demo's own slide.

Run from the repository root: ``python benchmarks/results/2026-12-06-live-one-pass/variants-probe/variants.py``.
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from bench_temporal import (
    Series,
    flat_truth,
    network,
    real_structure_series,
    real_structures,
    score_series,
    simulate_series,
)

import livedenoise.inference as inf
import livedenoise.one_pass as op

torch.set_num_threads(2)


def demo_series(seed: int, frames: int = 16) -> Series:
    """The demo's slide (config/microscope.toml) at 256², 20 ms frames 100 ms apart (10 frames/s)."""
    from simulators.config import load_microscope_config
    from simulators.microscope import SimulatedMicroscope

    cfg = load_microscope_config(roi_width=256, roi_height=256, seed=seed)
    cfg = cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"seed": seed})})
    mic = SimulatedMicroscope(cfg)
    mic.set_exposure(20.0)
    mic.set_light_power(5.0)
    noisy, truth, flat, moving = [], [], [], []
    peak = 0.0
    for _ in range(frames):
        with_spots = mic.expected_photons()
        spots, mic.sample.puncta_yx = mic.sample.puncta_yx, np.zeros((0, 2))
        without = mic.expected_photons()
        mic.sample.puncta_yx = spots
        peak = float(with_spots.max())
        moving.append((with_spots - without) > 0.1 * peak)
        flat.append(flat_truth(mic, with_spots))
        f = mic.snap()
        noisy.append(f.image)
        truth.append(f.truth)
        mic.sample.advance(0.08)  # 100 ms between frames at 10 frames/s
    return Series(f"demo seed {seed}", peak, "demo", np.stack(noisy), np.stack(truth).astype(np.float32),
                  np.stack(flat), np.stack(moving))


sim_cases = [(p, o) for p in (5.0, 20.0, 100.0) for o in ("confocal", "widefield")]
paths = real_structures(Path("../shared/data/real_pairs_dev"))
real_cases = [(p, path) for path in paths for p in (5.0, 20.0)]
sets = {"demo": [demo_series(s) for s in (0, 1, 2)],
        "sim": [simulate_series(p, o, 16, 256, seed=424_000 + i) for i, (p, o) in enumerate(sim_cases)],
        "real": [real_structure_series(path, p, 16, 256, seed=525_000 + i) for i, (p, path) in enumerate(real_cases)]}
orig_trust = inf.lag_trust
variants = [("trust h1 (shipped)", True, 1.0), ("no trust h1", False, 1.0), ("no trust h0.7", False, 0.7),
            ("no trust h0.5", False, 0.5)]
for name, cases in sets.items():
    rows: dict[str, list] = {}
    for s in cases:
        out, _, _ = network("temporal", s.noisy, "live")
        rows.setdefault("two passes", []).append(score_series(s, out))
        out, _, _ = network("fast", s.noisy, "frames")
        rows.setdefault("2-D fast", []).append(score_series(s, out))
        for vname, trust, h in variants:
            inf.lag_trust = orig_trust if trust else (lambda fusion: [1.0] * fusion.lags)
            op.AGREEMENT_H = h
            out, _, _ = network("temporal", s.noisy, "live", one_pass=True)
            rows.setdefault(vname, []).append(score_series(s, out))
        inf.lag_trust, op.AGREEMENT_H = orig_trust, 1.0
    for k, v in rows.items():
        print(f"{name:5s} {k:20s} {np.mean([x['psnr'] for x in v]):.2f} "
              f"moving {np.nanmean([x['psnr_moving'] for x in v]):.2f} rest {np.mean([x['psnr_rest'] for x in v]):.2f}",
              flush=True)
