"""Probe: is a fine-tuning step of the fast backbone faster through torch.compile? (2026-12-06)

    python benchmarks/results/2026-12-06-compile-train-probe/compile_train.py eager bf16 decoder
    python benchmarks/results/2026-12-06-compile-train-probe/compile_train.py compiled bf16 decoder

The step the live fine-tune runs (README "Cheaper fine-tuning steps"): 8 patches of 64², channels-last, the forward
pass under bf16 autocast, the decoder's weights alone trained by Adam; a mean squared error against a fixed target.
Prints the time of the first two steps (compilation included) and the median of the next 60.
"""
from __future__ import annotations

import sys
import time

import torch

from livedenoise.models import build_preset


def main() -> None:
    mode, precision = sys.argv[1], sys.argv[2]
    decoder_only = len(sys.argv) > 3 and sys.argv[3] == "decoder"
    torch.manual_seed(0)
    model, _, _ = build_preset("fast")
    model = model.to(memory_format=torch.channels_last)
    params = [p for n, p in model.named_parameters() if not decoder_only or not n.startswith(("encoders", "downs"))]
    print("trainable", sum(p.numel() for p in params), "of", sum(p.numel() for p in model.parameters()))
    opt = torch.optim.Adam(params, 1e-4)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x).float()
        return model(x)

    run = torch.compile(forward) if mode == "compiled" else forward
    x = torch.randn(8, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randn(8, 1, 64, 64)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = ((run(x) - y) ** 2).mean()
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    step()
    print(mode, precision, "first two steps s", round(time.perf_counter() - t0, 1))
    times = []
    for _ in range(60):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    print(mode, precision, "median step ms", round(1000 * times[30], 1), "torch threads", torch.get_num_threads())


if __name__ == "__main__":
    main()
