"""The sCMOS model's per-pixel statistics match its formulas; clipping and seeding behave."""
from __future__ import annotations

import numpy as np
import pytest

from simulators.camera import SCMOSCamera
from simulators.config import CameraConfig, load_camera_preset


def small_camera(**kw) -> SCMOSCamera:
    cfg = CameraConfig(name="test", width=24, height=20, gain=2.0, read_noise=1.5, dark_current=5.0, seed=3, **kw)
    return SCMOSCamera(cfg)


def stack(cam: SCMOSCamera, photons: np.ndarray, exposure_s: float, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([cam.expose(photons, exposure_s, rng) for _ in range(n)]).astype(np.float64)


def test_per_pixel_mean_and_variance_match_the_model():
    cam = small_camera()
    rng = np.random.default_rng(1)
    photons = rng.uniform(5, 200, cam.shape).astype(np.float32)
    t = 0.1
    n = 3000
    frames = stack(cam, photons, t, n)
    m = cam.maps
    e = cam.config.quantum_efficiency * photons + m.dark_current * t
    model_mean = m.gain * e + m.offset
    model_var = m.gain**2 * e + m.read_var + 1 / 12  # rounding to integer ADU adds 1/12
    emp_mean = frames.mean(0)
    emp_var = frames.var(0, ddof=1)
    # Standard errors: of the mean sqrt(var/n); of the variance ~ var*sqrt(2/(n-1)) (Gaussian approx; Poisson tails
    # are mild here).
    z_mean = (emp_mean - model_mean) / np.sqrt(model_var / n)
    z_var = (emp_var - model_var) / (model_var * np.sqrt(2 / (n - 1)))
    assert np.mean(np.abs(z_mean) > 4) < 0.01, "per-pixel means deviate from gain*(QE*photons+dark*t)+offset"
    assert np.mean(np.abs(z_var) > 4) < 0.01, "per-pixel variances deviate from gain^2*(QE*photons+dark*t)+read_var"
    assert abs(np.median(emp_var / model_var) - 1) < 0.01
    # Ground truth returned by the camera is exactly the model mean (no clipping here).
    np.testing.assert_allclose(cam.expected(photons, t), model_mean, rtol=1e-5)


def test_read_noise_map_has_a_heavy_tail():
    cfg = load_camera_preset("andor-zyla-4.2")
    cam = SCMOSCamera(cfg, roi=(512, 512))
    sigma_e = np.sqrt(cam.maps.read_var) / cam.maps.gain
    assert 0.8 < np.median(sigma_e) < 1.1  # Zyla 4.2 data sheet: 0.9-1.1 e- median
    assert np.percentile(sigma_e, 99.9) > 3 * np.median(sigma_e)  # noisy-pixel tail


def test_full_well_and_adc_clipping():
    cam = small_camera(full_well=1000.0)
    huge = np.full(cam.shape, 1e6, np.float32)
    frame = cam.expose(huge, 0.01, np.random.default_rng(0)).astype(np.float64)
    m = cam.maps
    # Clipped at full well: only read noise remains around gain*FW + offset.
    ceiling = m.gain * 1000 + m.offset
    assert np.all(np.abs(frame - ceiling) <= 6 * np.sqrt(m.read_var) + 1)
    np.testing.assert_allclose(cam.expected(huge, 0.01), ceiling, rtol=1e-5)

    cam12 = SCMOSCamera(CameraConfig(name="t12", width=16, height=16, bit_depth=12, gain=2.0, full_well=1e5, seed=1))
    frame12 = cam12.expose(np.full(cam12.shape, 1e5, np.float32), 0.01, np.random.default_rng(0))
    assert frame12.max() == 4095 and np.all(frame12 == 4095)
    assert cam12.expected(np.full(cam12.shape, 1e5, np.float32), 0.01).max() == 4095


def test_seeded_frames_are_reproducible():
    photons = np.full((20, 24), 30, np.float32)
    a = stack(small_camera(), photons, 0.05, 3, seed=11)
    b = stack(small_camera(), photons, 0.05, 3, seed=11)
    c = stack(small_camera(), photons, 0.05, 3, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Different camera seeds give different sensors (maps).
    other = SCMOSCamera(CameraConfig(name="x", width=24, height=20, seed=4))
    assert not np.array_equal(other.maps.offset, small_camera().maps.offset)


def test_frames_have_camera_dtype_and_integer_values():
    cam = small_camera()
    frame = cam.expose(np.full(cam.shape, 10, np.float32), 0.02, np.random.default_rng(0))
    assert frame.dtype == np.uint16 and frame.shape == (20, 24)
    with pytest.raises(ValueError, match="does not fit"):
        cam.set_roi(100, 100)
