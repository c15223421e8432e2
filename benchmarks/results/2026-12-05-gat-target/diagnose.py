"""Why does SURE accept a self-supervised fine-tune that loses against the sample?

    python benchmarks/results/2026-12-05-gat-target/diagnose.py BUDGET_S cal|nocal PEAK

Run at 1d3e309 (before the change: no ``expected_gat_torch``, so no "mapped" rows; the fine-tune used the unbiased
inverse, "linear mse adapted (own)" was then labelled "(unb)") it wrote diagnosis-before.json; run after it,
diagnosis-gat-target-*.json. It writes runs/sure_diag/diag-{cal|nocal}-PEAK.json.
"""
# ruff: noqa: E501, E702  (a probe script, kept as it ran)
import json
import sys

import numpy as np
import torch

from livedenoise.camera_calibration import CameraCalibration
from livedenoise.checkpoint import load_backbone
from livedenoise.config import TrainingConfig
from livedenoise.evaluate import SimulatedTask
from livedenoise.noise_model import normalizer_for
from livedenoise.training.data import split_strips
from livedenoise.training.finetune import finetune
from livedenoise.training.sure import sure_loss

budget = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
calibrated = (sys.argv[2] == "cal") if len(sys.argv) > 2 else True
peak = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
task = SimulatedTask("filaments", 256)
frame = task.train_frames(peak, seed=0, n=1)[0]
rate = task.fields("train", 0, 1)[0]
maps = task.camera.maps
cal = CameraCalibration(maps.offset.astype(np.float32), maps.read_var.astype(np.float32),
                        maps.gain.astype(np.float32), {"source": "sim"}) if calibrated else None
bb = load_backbone("fast")
norm = normalizer_for([frame], like=bb.normalizer, calibration=cal, saturation=bb.normalizer.saturation)
print("norm", norm.describe(), norm.inversion)
res = finetune(bb, [frame], None, calibration=cal, device="cpu", seed=0,
               training=TrainingConfig(time_budget_s=budget, max_steps=100_000))
print("steps", res.fit.steps, "sure_check", res.checkpoint.metadata["training"].get("sure_check"))
na = res.checkpoint.normalizer
print("inversion", na.inversion)
frac = TrainingConfig().validation_fraction
x = norm.forward(frame)
_, (xv,) = split_strips([x], frac)
rows = xv.shape[0]
S = norm.scale
# Monte-Carlo E[VST(noisy)] on the strip
rng = np.random.default_rng(123)
acc = np.zeros_like(x, dtype=np.float64); K = 400
for _ in range(K):
    acc += norm.forward(task.expose(rate, peak, rng)).astype(np.float64) * S
evst = (acc / K)[-rows:]
vst_s = (norm.forward(task.truth(rate, peak)).astype(np.float64) * S)[-rows:] if calibrated else None
flat = task.truth_flat(rate, peak)[-rows:].astype(np.float64)

def run(model, inp):
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(inp))[None, None])[0, 0].numpy().astype(np.float64)

fb_strip = run(bb.model, xv) * S
fa_strip = run(res.checkpoint.model, xv) * S
fb_full = (run(bb.model, x) * S)[-rows:]
fa_full = (run(res.checkpoint.model, x) * S)[-rows:]
out = {"steps": res.fit.steps, "sure_check": res.checkpoint.metadata["training"].get("sure_check"),
       "calibrated": calibrated, "peak": peak, "K": K}
def hmap(a):
    if not hasattr(norm, "expected_gat_torch"):  # the code before the change
        return np.full_like(a, np.nan)
    return norm.expected_gat_torch(torch.from_numpy(a / S)).numpy() * S
def mse(a, b): return float(np.mean((a - b) ** 2))
for tag, fb, fa in (("strip", fb_strip, fa_strip), ("full", fb_full, fa_full)):
    out[tag] = {
        "mse vs E[VST] backbone": mse(fb, evst), "mse vs E[VST] adapted": mse(fa, evst),
        **({"mse vs VST(s) backbone": mse(fb, vst_s), "mse vs VST(s) adapted": mse(fa, vst_s)} if vst_s is not None else {}),
        "mse vs E[VST] backbone mapped": mse(hmap(fb), evst), "mse vs E[VST] adapted mapped": mse(hmap(fa), evst),
        "mean bias vs E[VST] backbone": float(np.mean(fb - evst)), "mean bias vs E[VST] adapted": float(np.mean(fa - evst)),
        "linear mse backbone (alg)": mse(norm.copy(inversion="algebraic").inverse(fb / S), flat),
        "linear mse adapted (own)": mse(na.inverse(fa / S), flat),
        "linear mse adapted (alg)": mse(norm.copy(inversion="algebraic").inverse(fa / S), flat),
        "linear mse backbone (unb)": mse(na.inverse(fb / S), flat),
    }
# SURE with the probes, on the strip
def sure(model, n=16):
    gen = torch.Generator().manual_seed(7)
    t = torch.from_numpy(np.ascontiguousarray(xv))[None, None]
    model.eval()
    with torch.no_grad():
        return float(np.mean([float(sure_loss(model, t, norm.noise_std, torch.randn(t.shape, generator=gen)))
                              for _ in range(n)])) / norm.noise_std ** 2
out["sure16"] = {"backbone": sure(bb.model), "adapted": sure(res.checkpoint.model)}
print(json.dumps(out, indent=1))
json.dump(out, open(f"runs/sure_diag/diag-{'cal' if calibrated else 'nocal'}-{peak:g}.json", "w"), indent=1)
