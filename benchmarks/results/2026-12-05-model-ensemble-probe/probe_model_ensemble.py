# ruff: noqa
"""Probe (2026-12-05): do averages of different backbones beat the standard one alone? Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/results/2026-12-05-model-ensemble-probe/probe_model_ensemble.py > probe.log

The cases of benchmarks/bench_precision.py (first dev pair of each set, full size; simulated filaments 256² at 1-1,000
photons), each backbone with its noise model fitted to the image (fp32), PSNR as bench_precision scores it.
"""
import sys, numpy as np, torch
sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
from bench_precision import cases
from common import REAL_PAIRS_DEV
from livedenoise.evaluate import with_normalizer
from livedenoise.inference import Denoiser
from livedenoise.metrics import score
from livedenoise.modelspec import load_model_spec
data = cases(False, REAL_PAIRS_DEV)
models = {m: load_model_spec(m, device="cpu") for m in ("fast", "standard", "lite")}
res = {k: {"real": [], "simulated": []} for k in ("fast", "standard", "std+fast", "std+fast+lite", "std ens8", "std ens8 + fast ens8")}
for c in data:
    outs = {}
    for m, b in models.items():
        ck = with_normalizer(b, [c["noisy"]])
        outs[m] = Denoiser(ck, device="cpu").denoise(c["noisy"])
        if m in ("standard", "fast"):
            outs[m + " ens8"] = Denoiser(ck, device="cpu", ensemble=8).denoise(c["noisy"])
    combos = {"fast": outs["fast"], "standard": outs["standard"], "std+fast": (outs["standard"] + outs["fast"]) / 2,
              "std+fast+lite": (outs["standard"] + outs["fast"] + outs["lite"]) / 3, "std ens8": outs["standard ens8"],
              "std ens8 + fast ens8": (outs["standard ens8"] + outs["fast ens8"]) / 2}
    line = c["name"]
    for k, o in combos.items():
        p = score(c["reference"], o, affine=c["affine"]).psnr
        res[k][c["kind"]].append(p); line += f"  {k} {p:.2f}"
    print(line, flush=True)
for k, v in res.items():
    print(k, "real %.3f sim %.3f" % (np.mean(v["real"]), np.mean(v["simulated"])))
