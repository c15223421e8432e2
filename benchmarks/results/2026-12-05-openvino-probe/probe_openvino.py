"""Probe (2026-12-05): would an OpenVINO runtime for the 2-D network bring the fast backbone to 50 ms per 512² frame?

    python benchmarks/results/2026-12-05-openvino-probe/probe_openvino.py OUT.json

The fast backbone, fitted noise model, 3 structures x 4 photon levels of 512² simulated test frames (PSNR against the
sample without the camera's pattern), then the time per 512² frame through ``Denoiser.denoise`` (noise model and
inverse included, 2 threads, median of 8). OpenVINO (``openvino.convert_model`` of the PyTorch module, dynamic
N/H/W, padded outside as the network pads itself) replaces the engine's network inside an fp32 Denoiser; PyTorch
bf16 is the shipped ``precision="bf16"`` (first block and residual sum in fp32).
"""
import dataclasses
import json
import sys
import time

import numpy as np
import openvino as ov
import torch

from livedenoise.evaluate import SimulatedTask
from livedenoise.inference import Denoiser
from livedenoise.metrics import score
from livedenoise.models import size_multiple
from livedenoise.models.unet import pad_to_multiple
from livedenoise.modelspec import load_model_spec
from livedenoise.noise_model import normalizer_for


class OVNet(torch.nn.Module):
    def __init__(self, net, hint):
        super().__init__()
        self.multiple = size_multiple(net)
        example = torch.zeros(1, 1, 4 * self.multiple, 4 * self.multiple)
        m = ov.convert_model(net.float().eval(), example_input=example, input=[ov.PartialShape([-1, 1, -1, -1])])
        self.c = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 2,
                                                   "PERFORMANCE_HINT": "LATENCY"})

    def forward(self, x):
        p, h, w = pad_to_multiple(x.float(), self.multiple)
        return torch.from_numpy(np.array(self.c(p.numpy())[0][..., :h, :w], dtype=np.float32, copy=True))


torch.set_num_threads(2)
bb = load_model_spec("fast", device="cpu")
ov_net = {hint: OVNet(bb.model, hint) for hint in ("f32", "bf16")}


def make(kind):
    if kind.startswith("pytorch"):
        return Denoiser(bb, device="cpu", precision=kind.split()[1])
    d = Denoiser(bb, device="cpu", precision="fp32")
    return d, ov_net["f32" if kind.endswith("fp32") else "bf16"]


def run(kind, ckpt, frame):
    made = make(kind)
    if isinstance(made, tuple):
        d, net = made
        d.swap(ckpt)
        d._engine = dataclasses.replace(d._engine, model=net, channels_last=False)
    else:
        d = made
        d.swap(ckpt)
    return d


kinds = ("pytorch fp32", "pytorch bf16", "openvino fp32", "openvino bf16")
psnr = {k: [] for k in kinds}
for structure in ("filaments", "puncta", "nuclei"):
    task = SimulatedTask(structure, 512)
    for peak in (1.0, 5.0, 20.0, 100.0):
        rate = task.fields("test", 0, 1)[0]
        frame = task.expose(rate, peak, np.random.default_rng(1))
        ckpt = bb.clone()
        ckpt.normalizer = normalizer_for([frame], like=bb.normalizer)
        for k in kinds:
            psnr[k].append(score(task.truth_flat(rate, peak), run(k, ckpt, frame).denoise(frame)).psnr)
ms = {}
for k in kinds:
    d = run(k, ckpt, frame)
    d.denoise(frame)
    ts = []
    for _ in range(8):
        t0 = time.perf_counter()
        d.denoise(frame)
        ts.append(time.perf_counter() - t0)
    ms[k] = 1000 * float(np.median(ts))
ref = np.array(psnr["pytorch fp32"])
out = {k: {"mean psnr": float(np.mean(v)), "worst vs pytorch fp32": float(np.min(np.array(v) - ref)),
           "ms per 512² frame": ms[k]} for k, v in psnr.items()}
out = {"rows": out, "backbone": bb.name, "backbone_steps": bb.training.get("total_steps"), "openvino": ov.__version__,
       "torch": torch.__version__, "threads": 2, "command": "python " + " ".join(sys.argv)}
print(json.dumps(out, indent=1))
json.dump(out, open(sys.argv[1], "w"), indent=1)
