# ruff: noqa: E501, RUF005
"""Probe (2026-12-05): does int8 (NNCF post-training quantisation, run by OpenVINO) bring the fast backbone under
50 ms per 512² frame, and at what quality cost?

    python benchmarks/results/2026-12-05-int8-probe/probe_int8.py OUT.json     # needs openvino and nncf

The fast backbone with its noise model fitted to each frame (``with_normalizer``), simulated 512² test frames
(filaments and nuclei at 1, 5, 20 and 100 photons), PSNR against the sample without the camera's pattern, through
``Denoiser.denoise`` (noise model and inverse included), 2 threads. The network inside an fp32 Denoiser is replaced
by one of three int8 variants; activation ranges come from 10 procedurally drawn noisy frames (1 to 1,000 photons,
two read noises) put through the model's normaliser:

* ``int8 all``: every convolution in int8 except the first (it reads the frame) and the 1x1 head; residual in fp32;
* ``int8 level0 float``: the full-resolution level (first block, last decoder block, last up-sampling, head) in
  float32, the rest int8;
* ``hybrid``: the full-resolution level in PyTorch as ``precision="bf16"`` runs it (first block fp32), the levels
  below in OpenVINO int8.
"""
import copy
import json
import sys
import time

import nncf
import numpy as np
import openvino as ov
import torch
from scipy.ndimage import gaussian_filter

from livedenoise.evaluate import SimulatedTask, with_normalizer
from livedenoise.inference import Denoiser
from livedenoise.metrics import score
from livedenoise.models.unet import pad_to_multiple
from livedenoise.modelspec import load_model_spec

torch.set_num_threads(2)
THREADS = 2
core = ov.Core()


def structures(rng, size):
    field = np.zeros((size, size))
    for _ in range(int(rng.integers(20, 60))):
        y, x = rng.integers(0, size, 2)
        field[y, x] += rng.uniform(0.3, 1.0) * 20
    for _ in range(int(rng.integers(3, 8))):
        pos, angle = rng.uniform(0, size, 2), rng.uniform(0, 2 * np.pi)
        for _ in range(size * 2):
            angle += rng.normal(0, 0.08)
            pos = pos + (np.sin(angle), np.cos(angle))
            field[int(pos[0]) % size, int(pos[1]) % size] += 2.0
    field = gaussian_filter(field, rng.uniform(0.8, 2.0))
    yy, xx = np.mgrid[0:size, 0:size] / size
    glow = 0.1 * rng.uniform() * np.exp(-((yy - rng.uniform()) ** 2 + (xx - rng.uniform()) ** 2) / 0.2)
    field = field / max(field.max(), 1e-9) + glow
    return field / field.max()


def calibration_inputs(normalizer, size=192, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for peak in (1.0, 5.0, 20.0, 100.0, 1000.0):
        for read in (1.0, 2.5):
            clean = structures(rng, size) * peak + rng.uniform(0.02, 0.1) * peak
            noisy = rng.poisson(clean) + rng.normal(0.0, read, clean.shape) + 100.0
            norm = normalizer.copy(offset=100.0, gain=1.0, noise_a=1.0, noise_b=read**2, shift=0.0, vst=True,
                                   pixel_offset=None, pixel_gain=None, saturation=None)
            out.append(norm.forward(noisy)[None, None])
    return out


def compile_q(model, data, ignored=()):
    q = nncf.quantize(model, nncf.Dataset(data), preset=nncf.QuantizationPreset.MIXED, subset_size=len(data),
                      ignored_scope=nncf.IgnoredScope(patterns=list(ignored)) if ignored else None)
    return core.compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": THREADS,
                                         "PERFORMANCE_HINT": "LATENCY"})


class WholeOV(torch.nn.Module):
    """The whole network (without its residual sum) in OpenVINO; the residual sum in float32."""

    def __init__(self, net, data, ignored):
        super().__init__()
        body = copy.deepcopy(net).float().eval()
        body.residual = False
        self.m = net.size_multiple
        conv = ov.convert_model(body, example_input=torch.zeros(1, 1, 64, 64), input=[ov.PartialShape([-1, 1, -1, -1])])
        self.c = compile_q(conv, data, ignored)

    def forward(self, x):
        p, h, w = pad_to_multiple(x.float().contiguous(), self.m)
        return torch.from_numpy(np.array(self.c(p.numpy())[0][..., :h, :w], np.float32)) + x.float()


class Inner(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.encoders, self.downs = net.encoders[1:], net.downs[1:]
        self.ups, self.decoders = net.ups[:-1], net.decoders[:-1]

    def forward(self, y):
        skips = []
        for i, enc in enumerate(self.encoders):
            y = enc(y)
            if i < len(self.downs):
                skips.append(y)
                y = self.downs[i](y)
        for up, dec in zip(self.ups, self.decoders, strict=True):
            y = dec(torch.cat([up(y), skips.pop()], dim=1))
        return y


class Hybrid(torch.nn.Module):
    """Full-resolution level in PyTorch bf16 (first block fp32), inner levels in OpenVINO int8."""

    def __init__(self, net, data):
        super().__init__()
        f = copy.deepcopy(net).float().eval()
        with torch.inference_mode():
            inner_data = [f.downs[0](f.encoders[0](torch.from_numpy(x))).numpy() for x in data]
        c = int(net.widths[0])
        conv = ov.convert_model(Inner(f).eval(), example_input=torch.zeros(1, c, 32, 32),
                                input=[ov.PartialShape([-1, c, -1, -1])])
        self.inner = compile_q(conv, inner_data)
        self.first, self.down, self.up, self.last, self.head = f.encoders[0], f.downs[0], f.ups[-1], f.decoders[-1], f.head
        for m in (self.down, self.up, self.last, self.head):
            m.to(torch.bfloat16)
        for m in (self.first, self.down, self.up, self.last, self.head):
            m.to(memory_format=torch.channels_last)
        self.m = net.size_multiple

    def forward(self, x):
        p, h, w = pad_to_multiple(x.float(), self.m)
        skip = self.first(p.contiguous(memory_format=torch.channels_last)).to(torch.bfloat16)
        low = self.down(skip).float().contiguous().numpy()
        y = torch.from_numpy(np.asarray(self.inner(low)[0])).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        y = self.head(self.last(torch.cat([self.up(y), skip], dim=1))).float()
        return (y + p)[..., :h, :w]


bb = load_model_spec("fast", device="cpu")
data = calibration_inputs(bb.normalizer)
net = bb.model
variants = {
    "int8 all": WholeOV(net, data, (r".*encoders\.0\.0/.*", r".*head/.*")),
    "int8 level0 float": WholeOV(net, data, (r".*encoders\.0\..*", r".*decoders\.2\..*", r".*head/.*", r".*ups\.2/.*")),
    "hybrid": Hybrid(net, data),
}
kinds = ("pytorch fp32", "pytorch bf16", *variants)


def denoiser(kind, ckpt):
    if kind.startswith("pytorch"):
        return Denoiser(ckpt, device="cpu", precision=kind.split()[1])
    import dataclasses
    d = Denoiser(ckpt, device="cpu", precision="fp32")
    d._engine = dataclasses.replace(d._engine, model=variants[kind], channels_last=False)
    return d


rows = []
for structure in ("filaments", "nuclei"):
    task = SimulatedTask(structure, 512)
    for peak in (1.0, 5.0, 20.0, 100.0):
        noisy, _ = task.test_set(peak, 0, 1)
        flat = task.test_truth_flat(peak, 0, 1)[0]
        ckpt = with_normalizer(bb, [noisy[0]])
        row = {"case": f"{structure} {peak:g} photons"}
        for k in kinds:
            row[k] = score(flat, denoiser(k, ckpt).denoise(noisy[0])).psnr
        rows.append(row)
        print(json.dumps(row), flush=True)
frame = noisy[0]
dens = {k: denoiser(k, ckpt) for k in kinds}
for d in dens.values():
    d.denoise(frame)
times = {k: [] for k in kinds}
for _ in range(10):
    for k, d in dens.items():
        t0 = time.perf_counter()
        d.denoise(frame)
        times[k].append(1000 * (time.perf_counter() - t0))
summary = {}
for k in kinds:
    delta = [r[k] - r["pytorch fp32"] for r in rows]
    summary[k] = {"ms per 512² frame": float(np.median(times[k])), "mean psnr": float(np.mean([r[k] for r in rows])),
                  "mean dB vs fp32": float(np.mean(delta)), "worst dB vs fp32": float(np.min(delta)),
                  "dB vs fp32 at 1 photon": [r[k] - r["pytorch fp32"] for r in rows if " 1 photons" in r["case"]]}
    print(k, json.dumps(summary[k]), flush=True)
out = {"rows": rows, "summary": summary, "backbone": bb.name, "backbone_steps": bb.training.get("total_steps"),
       "openvino": ov.__version__, "nncf": nncf.__version__, "torch": torch.__version__, "threads": THREADS,
       "command": "python " + " ".join(sys.argv)}
json.dump(out, open(sys.argv[1], "w"), indent=1)
