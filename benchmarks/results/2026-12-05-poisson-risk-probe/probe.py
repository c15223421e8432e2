# ruff: noqa
"""Poisson risk vs SURE vs truth on bench_adapt_sim's cases (probe, 2026-12-05; see README.md here).

    python benchmarks/results/2026-12-05-poisson-risk-probe/probe.py 60 filaments,puncta 5,20

As run, except the estimator's import (it lived in livedenoise/training/ during the probe and was not shipped).
In the log and rows.json, "risk8"/"risk32" are one quantity: the estimate on the pixels whose read variance is
below 3x the median (the "normal" pixels); "risk" is the estimate on every held-out pixel.
"""
import os as _os, sys as _sys
_sys.path.insert(0, _os.path.dirname(_os.path.abspath(__file__)))
import copy, sys, json, time, logging
import numpy as np, torch
import livedenoise.training.finetune as ft
from livedenoise.camera_calibration import CameraCalibration
from livedenoise.config import TrainingConfig
from livedenoise.device import configure_cpu_threads
from livedenoise.evaluate import SimulatedTask
from livedenoise.inference import Denoiser
from livedenoise.metrics import score
from livedenoise.modelspec import load_model_spec
from livedenoise.noise_model import normalizer_for
from livedenoise.training.finetune import finetune
from livedenoise.training.data import split_strips
from poisson_risk import poisson_risk, network_in_counts, counts_of
logging.getLogger("livedenoise").setLevel(logging.WARNING)
configure_cpu_threads(2)
budget = float(sys.argv[1]); structures = sys.argv[2].split(","); photons = [float(p) for p in sys.argv[3].split(",")]
ways = sys.argv[4].split(",") if len(sys.argv) > 4 else ["no calibration", "calibration"]
backbone = load_model_spec("fast", device="cpu")
training = TrainingConfig(time_budget_s=budget, max_steps=1_000_000)
product_check, seen = ft._full_image_check, {}
def capturing_check(bv, av, strips, noise_std, variances=None):
    seen["state"] = copy.deepcopy(av.inner_model.state_dict() if hasattr(av, "inner_model") else av.state_dict())
    return product_check(bv, av, strips, noise_std, variances)
ft._full_image_check = capturing_check
rows = []
for structure in structures:
    task = SimulatedTask(structure, 256)
    maps = task.camera.maps
    cal = CameraCalibration(maps.offset.astype(np.float32), maps.read_var.astype(np.float32), maps.gain.astype(np.float32), {"source": "sim"})
    rate = task.fields("train", 0, 1)[0]
    for peak in photons:
        frame = task.train_frames(peak, seed=0, n=1)[0]
        flat = task.truth_flat(rate, peak)
        for way in ways:
            calibration = cal if way == "calibration" else None
            seen.clear()
            res = finetune(backbone, [frame], None, calibration=calibration, device="cpu", seed=0, training=training)
            if "state" not in seen:
                print(structure, peak, way, "no fit", res.fit.note); continue
            norm = res.checkpoint.normalizer
            tuned = res.checkpoint.clone(); tuned.model.load_state_dict(seen["state"])
            zero = backbone.clone(); zero.normalizer = norm
            h = frame.shape[0]; rows_val = max(round(h * training.validation_fraction), 8)
            counts, s2 = counts_of(frame, norm)
            if calibration is not None:
                s2 = (cal.read_var.astype(np.float64) / cal.gain.astype(np.float64) ** 2) / norm.noise_a ** 2
                s2 = s2[h - rows_val:]
            s2 = s2 + 1 / (12 * (norm.gain * norm.noise_a) ** 2)
            strip = counts[h - rows_val:]
            row = {"structure": structure, "photons": peak, "way": way, "steps": res.fit.steps, "kept": res.adapted,
                   "sure": res.checkpoint.metadata["training"].get("sure_check")}
            for name, ck in (("backbone", zero), ("tuned", tuned)):
                ck.model.eval()
                t = time.time()
                row[f"risk {name}"] = poisson_risk(network_in_counts(ck.model, norm), strip, s2)
                normal = np.broadcast_to(s2, strip.shape) < 3 * np.median(s2)
                row[f"risk8 {name}"] = poisson_risk(network_in_counts(ck.model, norm), strip, s2, valid=normal)
                row[f"risk32 {name}"] = row[f"risk8 {name}"]
                row["risk s"] = time.time() - t
                out = Denoiser(ck, device="cpu").denoise(frame)
                row[f"psnr {name}"] = score(flat, out).psnr
                sv = slice(h - rows_val, h)
                # true MSE in counts on the held-out rows, using the Denoiser output
                lam = (flat[sv].astype(np.float64) - norm.offset) / (norm.gain * norm.noise_a)
                oc = (out[sv].astype(np.float64) - norm.offset) / (norm.gain * norm.noise_a)
                row[f"true {name}"] = float(((oc - lam) ** 2).mean())
                # and directly from the counts pipeline (no saturation / tiling differences)
                g = network_in_counts(ck.model, norm)(strip[None])[0]
                row[f"true-pipe {name}"] = float(((g - lam) ** 2).mean())
            rows.append(row)
            gain = row["psnr tuned"] - row["psnr backbone"]
            print(f"{structure} {peak:g} {way}: steps {row['steps']} psnr {row['psnr backbone']:.2f}->{row['psnr tuned']:.2f} "
                  f"true-heldout {row['true backbone']:.4f}->{row['true tuned']:.4f} (pipe {row['true-pipe backbone']:.4f}->{row['true-pipe tuned']:.4f}) "
                  f"risk {row['risk backbone']:.4f}->{row['risk tuned']:.4f} ({row['risk s']:.1f}s) "
                  f"risk8 {row['risk8 backbone']:.4f}->{row['risk8 tuned']:.4f} risk32 {row['risk32 backbone']:.4f}->{row['risk32 tuned']:.4f} "
                  f"SURE {row['sure']['backbone']:.4f}->{row['sure']['adapted']:.4f} kept={row['kept']}", flush=True)
json.dump(rows, open(f"runs/pr/rows-{int(time.time())}.json", "w"), indent=1)
