"""Probe (2026-12-05, run after the calibrated output was fixed in commit f343504): with a camera calibration taking
the sensor's fixed pattern out before the network, does a self-supervised fine-tune still lose against the sample
while the SURE check accepts it? Fast backbone, one 256² frame of filaments at 20 photons (bench_speed's frame),
default TrainingConfig (fp32, all weights), the simulator's own maps as the calibration.

    python benchmarks/results/2026-12-05-train-layers/probe_calibrated_finetune.py 60 probe-calibrated-finetune.json
"""
import json
import sys

import numpy as np
from skimage.metrics import peak_signal_noise_ratio as psnr

from livedenoise.camera_calibration import CameraCalibration
from livedenoise.checkpoint import load_backbone
from livedenoise.config import TrainingConfig
from livedenoise.evaluate import SimulatedTask
from livedenoise.inference import Denoiser
from livedenoise.noise_model import normalizer_for
from livedenoise.training.finetune import finetune

budget = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
task = SimulatedTask("filaments", 256)
frame = task.train_frames(20.0, seed=0, n=1)[0]
rate = task.fields("train", 0, 1)[0]
truths = {"sample": task.truth_flat(rate, 20.0), "with pattern": task.truth(rate, 20.0)}
maps = task.camera.maps
cal = CameraCalibration(maps.offset.astype(np.float32), maps.read_var.astype(np.float32),
                        maps.gain.astype(np.float32), {"source": "the simulator's own maps"})
bb = load_backbone("fast")
rows = {}
for label, calibration in (("no calibration", None), ("camera calibration", cal)):
    zero = bb.clone()
    zero.normalizer = normalizer_for([frame], like=bb.normalizer, calibration=calibration,
                                     saturation=bb.normalizer.saturation)
    res = finetune(bb, [frame], None, calibration=calibration, device="cpu", seed=0,
                   training=TrainingConfig(time_budget_s=budget, max_steps=100_000))
    outs = {"backbone": Denoiser(zero, device="cpu").denoise(frame),
            "fine-tuned": Denoiser(res.checkpoint, device="cpu").denoise(frame)}
    scores = {f"{m} vs {t}": float(psnr(tv, o.astype(np.float32), data_range=float(tv.max() - tv.min())))
              for m, o in outs.items() for t, tv in truths.items()}
    rows[label] = {**scores, "steps": res.fit.steps, "adapted": res.adapted, "stopped": res.fit.stopped,
                   "sure_check": res.checkpoint.metadata["training"].get("sure_check")}
    print(label, json.dumps(rows[label]), flush=True)
json.dump({"budget_s": budget, "rows": rows, "command": "python " + " ".join(sys.argv)},
          open(sys.argv[2] if len(sys.argv) > 2 else "probe.json", "w"), indent=1, default=str)
