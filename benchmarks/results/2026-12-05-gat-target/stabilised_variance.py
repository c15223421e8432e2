"""Probe: the noise variance in the stabilised domain, per photon level, with and without the calibration."""
# ruff: noqa: E501, E702, UP031  (a probe script, kept as it ran)
import numpy as np

from livedenoise.camera_calibration import CameraCalibration
from livedenoise.checkpoint import load_backbone
from livedenoise.evaluate import SimulatedTask
from livedenoise.noise_model import normalizer_for

task = SimulatedTask("filaments", 256)
frame = task.train_frames(20.0, seed=0, n=1)[0]
rate = task.fields("train", 0, 1)[0]
maps = task.camera.maps
print("camera cfg", task.camera.config)
g = maps.gain; rv = maps.read_var
print(f"gain median {np.median(g):.3f} mean {g.mean():.3f}; read_var(ADU^2) median {np.median(rv):.2f} mean {rv.mean():.2f} p99 {np.percentile(rv,99):.2f} max {rv.max():.1f}")
print(f"read var e2: median {np.median(rv/g**2):.3f} mean {(rv/g**2).mean():.3f}")
print("dark", np.median(maps.dark_current), maps.dark_current.mean(), maps.dark_current.max())
bb = load_backbone("fast")
for cal in (None, CameraCalibration(maps.offset.astype(np.float32), maps.read_var.astype(np.float32), maps.gain.astype(np.float32), {})):
    norm = normalizer_for([frame], like=bb.normalizer, calibration=cal, saturation=bb.normalizer.saturation)
    rng = np.random.default_rng(5)
    fr = np.stack([norm.to_stabilised(task.expose(rate, 20.0, rng)) for _ in range(200)])
    v = fr.var(0, ddof=1)
    ph = task.photons(rate, 20.0)
    print(norm.describe())
    print(f" VST var: mean {v.mean():.3f} median {np.median(v):.3f} p99 {np.percentile(v, 99):.2f}")
    for lo, hi in ((0, 2), (2, 5), (5, 10), (10, 30)):
        m = (ph >= lo) & (ph < hi)
        print("  photons [%g,%g): n=%d  mean var %.3f median %.3f" % (lo, hi, m.sum(), v[m].mean(), np.median(v[m])))
