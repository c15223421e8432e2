"""Check (2026-12-05): the per-pixel noise variances the SURE check uses with a calibration, against the variance
measured over 200 exposures of the same field, on the held-out rows; fast backbone as the estimate of the counts.

    python benchmarks/results/2026-12-05-gat-target/check_variances.py > check_variances.txt
"""
import numpy as np

from livedenoise.camera_calibration import CameraCalibration
from livedenoise.checkpoint import load_backbone
from livedenoise.config import TrainingConfig
from livedenoise.evaluate import SimulatedTask
from livedenoise.noise_model import normalizer_for
from livedenoise.training.data import split_strips
from livedenoise.training.finetune import _calibrated_variances

bb = load_backbone("fast")
for structure in ("filaments", "puncta"):
    task = SimulatedTask(structure, 256)
    m = task.camera.maps
    cal = CameraCalibration(m.offset.astype(np.float32), m.read_var.astype(np.float32), m.gain.astype(np.float32), {})
    rate = task.fields("train", 0, 1)[0]
    for peak in (5.0, 20.0):
        frame = task.train_frames(peak, seed=0, n=1)[0]
        norm = normalizer_for([frame], like=bb.normalizer, calibration=cal)
        strip = split_strips([norm.forward(frame)], TrainingConfig().validation_fraction)[1][0]
        (model,) = _calibrated_variances(bb.model, [strip], norm, cal)
        rng = np.random.default_rng(9)
        true = np.stack([norm.to_stabilised(task.expose(rate, peak, rng)) for _ in range(200)]).var(0, ddof=1)
        true = true[-strip.shape[0]:]
        noisy = (m.read_var / m.gain ** 2)[-strip.shape[0]:] > 4 * norm.noise_b
        print(f"{structure} {peak:g} ph: mean variance modelled {model.mean():.3f}, measured {true.mean():.3f}; "
              f"noisy pixels ({int(noisy.sum())}) modelled {model[noisy].mean():.2f}, "
              f"measured {true[noisy].mean():.2f}; correlation {np.corrcoef(model.ravel(), true.ravel())[0, 1]:.2f}",
              flush=True)
