"""Probe: a live temporal frame in ONE 2-D pass.

Each new frame's raw electrons are averaged with its registered neighbours' raw electrons where the neighbours'
*outputs* (already computed, causal) agree with the new *noisy* frame; the average is denoised once under a
per-pixel noise model of an n(x)-frame mean (GAT with var/n(x)). No first pass on the new frame.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_temporal import network, score_series, simulate_series

from livedenoise.evaluate import with_normalizer
from livedenoise.inference import Denoiser
from livedenoise.models.temporal import shift_between, shift_frame
from livedenoise.modelspec import load_model_spec


def forward_n(norm, e, n):
    a = norm.noise_a / n
    b = norm.noise_b / n
    y = (2.0 / a) * torch.sqrt(torch.clamp(a * e + 0.375 * a * a + b, min=0.0)) - norm.shift * torch.sqrt(n)
    return y / norm.scale


def inverse_n(norm, y, n):
    a = norm.noise_a / n
    b = norm.noise_b / n
    v = torch.clamp(y * norm.scale + norm.shift * torch.sqrt(n), min=0.0)
    e = ((a * v / 2.0) ** 2 - (0.375 * a * a + b)) / a
    return e  # electrons


def blur(x, sigma):
    r = max(1, math.ceil(3 * sigma))
    k = torch.tensor([math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-r, r + 1)])
    k = k / k.sum()
    p = torch.nn.functional.pad(x[None, None], (r, r, r, r), mode="replicate")
    p = torch.nn.functional.conv2d(p, k.view(1, 1, 1, -1))
    p = torch.nn.functional.conv2d(p, k.view(1, 1, -1, 1))
    return p[0, 0]


def onepass_live(stack, *, lags=4, sigma=2.0, h=1.0, mode="sq", max_shift=8, trust=None, wblur=0.0, nglobal=False):
    ckpt = with_normalizer(load_model_spec("fast"), list(stack))
    den = Denoiser(ckpt, device="cpu")
    eng = den._current()
    norm = eng.normalizer
    den.warmup(stack.shape[-2:])
    outs, past = [], []  # past: (electrons raw, output electrons, single-frame units of output, spectrum)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for f in stack:
            x = torch.from_numpy(f.astype(np.float32))
            e = norm.electrons_torch(x)
            z = norm.forward_torch(x)  # noisy, single-frame units (noise 1/scale)
            num, den_w, sq = e.clone(), torch.ones_like(e), torch.ones_like(e)
            if past:
                sz = torch.fft.rfft2(z - z.mean())
                for lag, (e_k, _o_k, g_k, sp_k) in enumerate(reversed(past[-lags:]), start=1):
                    dy, dx = shift_between(sp_k, sz, tuple(z.shape), max_shift)
                    g_m, valid = shift_frame(g_k, dy, dx)
                    e_m, _ = shift_frame(e_k, dy, dx)
                    u = (z - g_m) * norm.scale
                    if mode == "sq":
                        s = blur(u * u, sigma) - 1.0
                    else:  # signed: blur the difference, then square, minus its noise
                        r = max(1, math.ceil(3 * sigma))
                        g = torch.tensor([math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-r, r + 1)])
                        noise = float((g / g.sum()).pow(2).sum()) ** 2
                        s = blur(u, sigma) ** 2 - noise
                    w = torch.exp(-torch.clamp(s, min=0.0) / (h * h))
                    if wblur:
                        w = blur(w, wblur)
                    w = w * valid
                    if trust is not None:
                        w = w * trust[lag - 1]
                    num += w * e_m
                    den_w += w
                    sq += w * w
            avg = num / den_w
            n = den_w * den_w / sq
            if nglobal:
                n = torch.full_like(n, float(torch.median(n)))
            y = den._units_pass(eng, forward_n(norm, avg, n)[None])[0]
            o_e = inverse_n(norm, y, n)
            out = norm.output_from_electrons_torch(o_e)
            g = norm.expected_gat_torch(forward_n(norm, o_e, torch.ones_like(o_e)))
            past.append((e, o_e, g, torch.fft.rfft2(g - g.mean())))
            past = past[-lags:]
            outs.append(out.numpy())
    return np.stack(outs).astype(np.float32), (time.perf_counter() - t0) / len(stack)


def main():
    torch.set_num_threads(2)
    cases = [(5.0, "confocal"), (20.0, "widefield"), (100.0, "confocal")]
    if "--all" in sys.argv:
        cases = [(p, o) for p in (5.0, 20.0, 100.0) for o in ("confocal", "widefield")]
    tr = [0.5588, 0.2992, 0.2069, 0.2251]
    variants = [("per-pixel n", {"sigma": 2.0, "h": 1.0}),
                ("per-pixel n, weights blurred", {"sigma": 2.0, "h": 1.0, "wblur": 2.0}),
                ("median n", {"sigma": 2.0, "h": 1.0, "nglobal": True}),
                ("median n, trust", {"sigma": 2.0, "h": 1.0, "trust": tr, "nglobal": True}),
                ("median n, trust, h 0.7", {"sigma": 2.0, "h": 0.7, "trust": tr, "nglobal": True}),
                ("median n, trust, h 1.3", {"sigma": 2.0, "h": 1.3, "trust": tr, "nglobal": True})]
    for arg in sys.argv[1:]:
        if arg.startswith("--only="):
            keep = arg.split("=", 1)[1].split(",")
            variants = [v for v in variants if v[0] in keep]
    tot = {}
    for _i, (ph, op) in enumerate(cases):
        s = simulate_series(ph, op, 16, 256, seed=424_000 + [(p, o) for p in (5.0, 20.0, 100.0)
                                                             for o in ("confocal", "widefield")].index((ph, op)))
        res = {}
        out, sec, _ = network("fast", s.noisy, "frames")
        res["2-D fast"] = (score_series(s, out), sec)
        out, sec, _ = network("temporal", s.noisy, "live")
        res["temporal live"] = (score_series(s, out), sec)
        out, sec, _ = network("temporal", s.noisy, "live", second_pass=False)
        res["fusion live"] = (score_series(s, out), sec)
        for name, kw in variants:
            out, sec = onepass_live(s.noisy, **kw)
            res["1p " + name] = (score_series(s, out), sec)
        print(f"{s.name}:")
        for k, (sc, sec) in res.items():
            print(f"  {k:32s} {sc['psnr']:.2f}  moving {sc['psnr_moving']:.2f}  rest {sc['psnr_rest']:.2f}  "
                  f"{sec * 1000:.0f} ms", flush=True)
            tot.setdefault(k, []).append((sc["psnr"], sc["psnr_moving"], sc["psnr_rest"]))
    print("mean:")
    for k, v in tot.items():
        a = np.mean(np.array(v), axis=0)
        print(f"  {k:32s} {a[0]:.2f}  moving {a[1]:.2f}  rest {a[2]:.2f}")


if __name__ == "__main__":
    main()
