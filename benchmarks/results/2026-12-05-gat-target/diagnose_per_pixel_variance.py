"""Per-pixel noise variance in SURE: does it rank backbone and fine-tune as the truth does (calibrated camera)?"""
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
from livedenoise.training.finetune import _objective_view, finetune

budget = float(sys.argv[1]); peak = float(sys.argv[2]); structure = sys.argv[3] if len(sys.argv) > 3 else "filaments"
task = SimulatedTask(structure, 256)
frame = task.train_frames(peak, seed=0, n=1)[0]
rate = task.fields("train", 0, 1)[0]
maps = task.camera.maps
cal = CameraCalibration(maps.offset.astype(np.float32), maps.read_var.astype(np.float32), maps.gain.astype(np.float32), {})
bb = load_backbone("fast")
norm = normalizer_for([frame], like=bb.normalizer, calibration=cal, saturation=bb.normalizer.saturation)
res = finetune(bb, [frame], None, calibration=cal, device="cpu", seed=0,
               training=TrainingConfig(time_budget_s=budget, max_steps=100_000))
S = norm.scale
x = norm.forward(frame)
rows = split_strips([x], TrainingConfig().validation_fraction)[1][0].shape[0]
xv = x[-rows:]
rng = np.random.default_rng(123)
fr = np.stack([norm.to_stabilised(task.expose(rate, peak, rng)) for _ in range(300)])
evst, vvar = fr.mean(0)[-rows:], fr.var(0, ddof=1)[-rows:]
flat = task.truth_flat(rate, peak)[-rows:]
vb, va = _objective_view(bb.model, norm, "noise2same").eval(), _objective_view(res.checkpoint.model, norm, "noise2same").eval()
t = torch.from_numpy(np.ascontiguousarray(xv))[None, None]
with torch.no_grad():
    raw_b = bb.model(t)[0, 0].numpy()
lam = np.maximum((norm.inverse(raw_b) - norm.offset) / norm.gain, 0.0)  # electrons, backbone's estimate
bi = (maps.read_var / maps.gain ** 2)[-rows:]
w_model = (lam + bi) / (lam + norm.noise_b)
def sure(view, w, n=16):
    gen = torch.Generator().manual_seed(7)
    sig2 = norm.noise_std ** 2
    wt = torch.from_numpy(np.asarray(w, np.float32))[None, None]
    vals = []
    with torch.no_grad():
        out = view(t)
        for _ in range(n):
            b = torch.randn(t.shape, generator=gen)
            eps = 1e-2 * norm.noise_std
            div = (wt * b * (view(t + eps * b) - out)).mean() / eps
            vals.append(float(((out - t) ** 2).mean() - sig2 * wt.mean() + 2 * sig2 * div) / sig2)
    return float(np.mean(vals))
with torch.no_grad():
    ob, oa = vb(t)[0, 0].numpy() * S, va(t)[0, 0].numpy() * S
out = {"structure": structure, "peak": peak, "steps": res.fit.steps, "sure_check": res.checkpoint.metadata["training"].get("sure_check"),
       "true mse mapped": {"backbone": float(np.mean((ob - evst) ** 2)), "adapted": float(np.mean((oa - evst) ** 2))},
       "mean VST var (strip)": float(vvar.mean()),
       "linear mse vs flat": {"backbone": float(np.mean((norm.inverse(raw_b) - flat) ** 2)),
                              "adapted": float(np.mean((res.checkpoint.normalizer.inverse(res.checkpoint.model(t)[0, 0].detach().numpy()) - flat) ** 2))}}
for name, w in (("sigma 1", np.ones_like(xv)), ("per-pixel model", w_model), ("per-pixel oracle", vvar)):
    out["SURE " + name] = {"backbone": sure(vb, w), "adapted": sure(va, w)}
print(json.dumps(out, indent=1))
json.dump(out, open(f"runs/sure_diag/diag3-{structure}-{peak:g}.json", "w"), indent=1)
