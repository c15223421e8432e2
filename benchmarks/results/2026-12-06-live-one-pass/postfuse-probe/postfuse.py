"""Probe: the one-pass outputs fused once more over time (MotionAdaptiveFusion on the outputs, causal).

Run from the repository root: ``python benchmarks/results/2026-12-06-live-one-pass/postfuse-probe/postfuse.py sim``
(or ``real``); see the README beside it.
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from bench_temporal import real_structure_series, real_structures, score_series, simulate_series

from livedenoise.evaluate import with_normalizer
from livedenoise.inference import Denoiser
from livedenoise.modelspec import load_model_spec

torch.set_num_threads(2)
which = sys.argv[1] if len(sys.argv) > 1 else "sim"
if which == "sim":
    sim_cases = [(p, o) for p in (5.0, 20.0, 100.0) for o in ("confocal", "widefield")]
    cases = [simulate_series(p, o, 16, 256, seed=424_000 + i) for i, (p, o) in enumerate(sim_cases)]
else:
    paths = real_structures(Path("../shared/data/real_pairs_dev"))
    real_cases = [(p, path) for path in paths for p in (5.0, 20.0)]
    cases = [real_structure_series(path, p, 16, 256, seed=525_000 + i) for i, (p, path) in enumerate(real_cases)]
tot: dict[str, list] = {}
for s in cases:
    ckpt = with_normalizer(load_model_spec("temporal"), list(s.noisy))
    den = Denoiser(ckpt, device="cpu")
    eng = den._current()
    norm, fusion = eng.normalizer, eng.fusion
    one = np.stack([den.push(f, one_pass=True) for f in s.noisy])
    res = {"one pass": score_series(s, one)}
    with torch.inference_mode():
        e = torch.from_numpy((one - norm.offset) / norm.gain).float()
        inel = norm.copy(offset=0.0, gain=1.0, pixel_offset=None, pixel_gain=None)
        d = inel.forward_torch(e)  # network units of the outputs
        for name, hmul in (("post-fused h1", 1.0), ("post-fused h0.5", 0.5), ("post-fused h2", 2.0)):
            saved = fusion.log_h.data.clone()
            fusion.log_h.data += float(np.log(hmul))
            fused = fusion.fuse_series(d, causal=True).fused
            fusion.log_h.data.copy_(saved)
            out = norm.output_from_electrons_torch(inel.inverse_torch(fused)).numpy()
            res[name] = score_series(s, out)
    print(s.name, "  ".join(f"{k}: {v['psnr']:.2f}/{v['psnr_moving']:.2f}/{v['psnr_rest']:.2f}"
                            for k, v in res.items()), flush=True)
    for k, v in res.items():
        tot.setdefault(k, []).append((v["psnr"], v["psnr_moving"], v["psnr_rest"]))
for k, v in tot.items():
    a = np.mean(np.array(v), axis=0)
    print(f"mean {k:18s} {a[0]:.2f} moving {a[1]:.2f} rest {a[2]:.2f}")
