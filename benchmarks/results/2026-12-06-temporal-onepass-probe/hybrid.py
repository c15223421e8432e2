"""Probe: temporal backbones whose two 2-D passes use different networks (first pass / second pass)."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_temporal import network, score_series, simulate_series

from livedenoise.evaluate import with_normalizer
from livedenoise.inference import Denoiser
from livedenoise.modelspec import load_model_spec


def hybrid(first, second, stack, mode):
    ck = load_model_spec(first).clone()
    if second is not None:
        ck.model.averages = load_model_spec(second).model
        ck.model.averages_inversion = "algebraic"
    den = Denoiser(with_normalizer(ck, list(stack)), device="cpu")
    den.warmup(stack.shape[-2:])
    t0 = time.perf_counter()
    out = np.stack([den.push(f) for f in stack]) if mode == "live" else den.denoise_stack(stack)
    return out.astype(np.float32), (time.perf_counter() - t0) / len(stack)

torch.set_num_threads(2)
tot = {}
allc = [(p, o) for p in (5.0, 20.0, 100.0) for o in ("confocal", "widefield")]
for ph, op in allc:
    s = simulate_series(ph, op, 16, 256, seed=424_000 + allc.index((ph, op)))
    res = {}
    for frame_model in ("fast", "lite"):
        out, sec, _ = network(frame_model, s.noisy, "frames")
        res["2-D " + frame_model] = (score_series(s, out), sec)
    for name, a, b in [("temporal", "temporal", None), ("temporal-lite", "temporal-lite", None),
                       ("lite→fast", "temporal-lite", "fast"), ("fast→lite", "temporal", "lite")]:
        out, sec = hybrid(a, b, s.noisy, "live")
        res[name + " live"] = (score_series(s, out), sec)
    print(f"{s.name}:")
    for k, (sc, sec) in res.items():
        print(f"  {k:22s} {sc['psnr']:.2f}  moving {sc['psnr_moving']:.2f}  rest {sc['psnr_rest']:.2f}  "
              f"{sec * 1000:.0f} ms", flush=True)
        tot.setdefault(k, []).append((sc["psnr"], sc["psnr_moving"], sc["psnr_rest"], sec))
print("mean:")
for k, v in tot.items():
    a = np.mean(np.array(v), axis=0)
    print(f"  {k:22s} {a[0]:.2f}  moving {a[1]:.2f}  rest {a[2]:.2f}  {a[3]*1000:.0f} ms")
