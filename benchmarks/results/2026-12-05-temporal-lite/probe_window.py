"""Probe (2026-12-05, not shipped): ``temporal-lite`` with a longer window; the trusts of the new lags copy the
oldest trained lag's. Made the ``probe-window-*.json`` results here with ``benchmarks/bench_temporal.py``:

    python benchmarks/results/2026-12-05-temporal-lite/probe_window.py 7 runs/tl/temporal-lite-w7.safetensors
    python benchmarks/bench_temporal.py --temporal runs/tl/temporal-lite-w7.safetensors --frame-model lite \\
        --no-bm4d --no-deepcad --output runs/tl/bench-w7
"""
import sys

import torch

from livedenoise.checkpoint import load_backbone, save_checkpoint
from livedenoise.models.temporal import TemporalUNet

window, out = int(sys.argv[1]), sys.argv[2]
src = load_backbone("temporal-lite")
m0 = src.model
m = TemporalUNet(window=window, widths=list(m0.frame.widths), sigma=m0.fusion.sigma, align=m0.fusion.align)
m.frame.load_state_dict(m0.frame.state_dict())
with torch.no_grad():
    m.fusion.log_h.copy_(m0.fusion.log_h)
    t = m0.fusion.trust.detach()
    m.fusion.trust.copy_(torch.cat([t, t[-1:].repeat(window - 1 - len(t))]))
training = dict(src.training)
training["stages"] = [*training["stages"],
                      {"steps": 0, "note": f"probe: window {window}, new lags copy lag {len(t)}'s trust"}]
save_checkpoint(out, m, arch=src.arch, arch_kwargs=m.arch_kwargs, normalizer=src.normalizer, training=training,
                metrics={}, name=f"temporal-lite-w{window}")
print("wrote", out)
