"""Probe (2026-12-05): torch.compile (inductor, static shapes) of the fast backbone's engine network at 512², 2 threads.

    python benchmarks/results/2026-12-05-openvino-probe/probe_torch_compile.py > probe_torch_compile.txt
"""
# ruff: noqa: E501, E702, B023  (a probe script, kept as it ran)
import time

import numpy as np
import torch

from livedenoise.inference import Denoiser

torch.set_num_threads(2)
for p in ("fp32", "bf16"):
    d = Denoiser("fast", device="cpu", precision=p)
    eng = d._engine
    x = (torch.randn(1, 1, 512, 512) * 0.1 + 0.3)
    def bench(fn, n=10):
        with torch.inference_mode():
            fn(); fn()
            ts = []
            for _ in range(n):
                t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
        return 1000 * np.median(ts)
    xin = x.contiguous(memory_format=torch.channels_last)
    eager = bench(lambda: eng.model(xin))
    t0 = time.perf_counter()
    comp = torch.compile(eng.model, dynamic=False)
    with torch.inference_mode():
        ref = eng.model(xin).float(); out = comp(xin).float()
    ct = time.perf_counter() - t0
    c = bench(lambda: comp(xin))
    print(p, f"eager {eager:.1f} ms, compiled {c:.1f} ms (compile {ct:.0f} s), maxdiff/range {float((out-ref).abs().max()/(ref.max()-ref.min())):.1e}", flush=True)
