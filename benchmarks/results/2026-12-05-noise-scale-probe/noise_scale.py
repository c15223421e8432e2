"""Oracle probe: how much does a backbone's dev-pair PSNR move if the fitted noise variance is scaled by k?

    python benchmarks/results/2026-12-05-noise-scale-probe/noise_scale.py standard 0.7,0.85,1.0,1.2,1.45
"""
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from bench_backbone import dev_cases
from common import REAL_PAIRS_DEV

from livedenoise.evaluate import with_normalizer
from livedenoise.inference import Denoiser
from livedenoise.metrics import score
from livedenoise.modelspec import load_model_spec

logging.getLogger("livedenoise").setLevel(logging.ERROR)
torch.set_num_threads(2)
model = sys.argv[1] if len(sys.argv) > 1 else "standard"
ks = [float(k) for k in (sys.argv[2] if len(sys.argv) > 2 else "0.7,0.85,1.0,1.2,1.45").split(",")]
cases = dev_cases(REAL_PAIRS_DEV, False)
ckpt = load_model_spec(model)
rows = []
for c in cases:
    base = with_normalizer(ckpt, [c.noisy])
    for k in ks:
        ck = base.clone()
        n = ck.normalizer
        # the variance model scaled by k; the fitted shift is kept (see README.md)
        ck.normalizer = dataclasses.replace(n, noise_a=n.noise_a * k, noise_b=n.noise_b * k)
        out = Denoiser(ck, device="cpu").denoise(c.noisy)
        s = score(c.reference, out, affine=c.affine)
        rows.append({"case": c.name, "set": c.group, "k": k, "psnr": s.psnr, "ssim": s.ssim})
    print(c.name, " ".join(f"{r['psnr']:.2f}" for r in rows[-len(ks):]), flush=True)
print("set", *ks)
for group in sorted({r["set"] for r in rows}):
    print(group, *[f"{np.mean([r['psnr'] for r in rows if r['set'] == group and r['k'] == k]):.2f}" for k in ks])
Path(f"runs/probe/noise_scale_{model}.json").write_text(json.dumps(rows))
