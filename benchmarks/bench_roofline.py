"""How close each backbone's network runs to what this CPU's convolutions can do, in fp32 and bf16.

    python benchmarks/bench_roofline.py                    # lite, fast, standard; 2 threads
    python benchmarks/bench_roofline.py --models fast --threads 1

Why: the project's speed target is ≤ 50 ms per 512² frame of the fast backbone and ≥ 5 Mpx/s in batch. A network's time
cannot fall below its multiply-adds divided by the best rate the CPU's convolution kernels reach, so this prints,
for each model, the multiply-adds of one 512² frame (counted by hooks on every convolution), the network's
measured time and rate, and the floor that the best rate measured here (3x3 convolutions of 16 to 128 channels at
the sizes the fast U-Net runs them, channels-last, oneDNN through PyTorch) would allow: a measured floor, not a
hardware bound. Network only, without the noise model around it, with
freed memory kept for reuse as a CPU ``Denoiser`` keeps it (``livedenoise/cpu_memory.py``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, load_average, machine, publish, report, table

#: 3x3 convolutions the U-Nets run (channels in = out, side), all of the same multiply-adds.
CONV_SHAPES = ((16, 512), (32, 256), (64, 128), (128, 64))


def multiply_adds(model, size: int) -> int:
    """Multiply-adds of one ``size``² frame through ``model`` (convolutions and transposed convolutions)."""
    import torch

    total = [0]

    def hook(mod, inp, out) -> None:
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.ConvTranspose2d):
            total[0] += inp[0].numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    for h in handles:
        h.remove()
    return total[0]


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    import copy

    import torch

    from livedenoise.cpu_memory import keep_freed_memory
    from livedenoise.device import configure_cpu_threads
    from livedenoise.modelspec import load_model_spec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lite,fast,standard")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    configure_cpu_threads(args.threads)
    keep_freed_memory()  # as every CPU Denoiser does: activations reuse freed memory
    load_start = load_average()
    cl = torch.channels_last
    convs = []
    with torch.inference_mode():
        for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            for ch, side in CONV_SHAPES:
                conv = torch.nn.Conv2d(ch, ch, 3, padding=1).to(dtype).to(memory_format=cl)
                x = torch.randn(1, ch, side, side).to(dtype).contiguous(memory_format=cl)
                ms = median_ms(lambda conv=conv, x=x: conv(x), args.repeats)
                macs = ch * ch * 9 * side * side
                convs.append({"precision": label, "channels": ch, "side": side, "ms": ms, "gmac_s": macs / ms / 1e6})
                print(f"[roofline] conv {label} {ch}->{ch} at {side}²: {ms:.2f} ms, {macs / ms / 1e6:.0f} GMAC/s",
                      flush=True)
    best = {p: max(c["gmac_s"] for c in convs if c["precision"] == p) for p in ("fp32", "bf16")}
    rows = []
    for name in args.models.split(","):
        spec = load_model_spec(name, device="cpu")
        base = spec.model.float().eval()
        macs = multiply_adds(base, 512)
        x = torch.randn(1, 1, 512, 512).contiguous(memory_format=cl)
        for label in ("fp32", "bf16"):
            net = copy.deepcopy(base).to(memory_format=cl)
            if label == "bf16":
                net.to_reduced_precision(torch.bfloat16)  # as Denoiser(precision="bf16") runs it
            with torch.inference_mode():
                ms = median_ms(lambda net=net, x=x: net(x), args.repeats)
            rows.append({"model": name, "steps": spec.training.get("total_steps"), "precision": label,
                         "gmac_per_512": macs / 1e9, "ms": ms, "gmac_s": macs / ms / 1e6,
                         "floor_ms": macs / best[label] / 1e6})
            print(f"[roofline] {name} {label}: {macs / 1e9:.2f} GMAC, {ms:.1f} ms, {macs / ms / 1e6:.0f} GMAC/s, "
                  f"floor {macs / best[label] / 1e6:.1f} ms", flush=True)
    info = {**machine(), "load_average_start": load_start, "threads": torch.get_num_threads()}
    command = (f"python benchmarks/bench_roofline.py --models {args.models} --threads {args.threads}"
               + (f" --repeats {args.repeats}" if args.repeats != 15 else ""))
    payload = {"machine": info, "repeats": args.repeats, "convs": convs, "best_gmac_s": best, "rows": rows,
               "command": command}
    publish(args.output, "roofline", payload, render(payload))
    return 0


def summary_table(payload: dict) -> str:
    """Each model's network against the best convolution rate (the README shows this)."""
    best = payload["best_gmac_s"]
    return table(["model", "training steps", "GMAC per 512² frame", "precision", "ms (network)", "GMAC/s",
                  "share of the best conv rate", "floor ms at that rate", "512² frames/s", "Mpx/s"],
                 [[f"`{r['model']}`", r["steps"] or "-", f"{r['gmac_per_512']:.2f}", r["precision"], f"{r['ms']:.1f}",
                   f"{r['gmac_s']:.0f}", f"{r['gmac_s'] / best[r['precision']]:.0%}", f"{r['floor_ms']:.1f}",
                   f"{1000 / r['ms']:.1f}", f"{0.262144 * 1000 / r['ms']:.2f}"] for r in payload["rows"]])


def render(payload: dict) -> str:
    best = payload["best_gmac_s"]
    lines = ["Best rate of a single 3x3 convolution (channels-last, the U-Nets' shapes): "
             f"fp32 {best['fp32']:.0f}, bf16 {best['bf16']:.0f} GMAC/s.", "",
             table(["precision", "channels", "side", "ms", "GMAC/s"],
                   [[c["precision"], c["channels"], c["side"], f"{c['ms']:.2f}", f"{c['gmac_s']:.0f}"]
                    for c in payload["convs"]]), "", summary_table(payload)]
    return report("Networks against the CPU's convolution rate", payload, lines)


if __name__ == "__main__":
    sys.exit(main())
