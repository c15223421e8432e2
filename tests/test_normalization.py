"""Normalizer: exact round trip, variance stabilisation, noise estimation, validation, JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from livedenoise.errors import ConfigError, InputDataError
from livedenoise.normalization import Normalizer, check_image, estimate_poisson_gaussian

GAIN, OFFSET, READ_SD_ADU = 2.0, 100.0, 3.0


def _camera(lam: np.ndarray, rng: np.random.Generator, offset: float = OFFSET) -> np.ndarray:
    """Poisson-Gaussian sCMOS-like pixels in ADU for an expected photoelectron image ``lam``."""
    return GAIN * rng.poisson(lam) + rng.normal(0.0, READ_SD_ADU, lam.shape) + offset


def _scene(peak: float, rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """Smooth gradient plus Gaussian blobs: a broad range of intensities with some structure."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    img = peak * (0.05 + 0.95 * xx / size) * (0.5 + 0.5 * np.sin(yy / 20.0) ** 2)
    for cy, cx in rng.uniform(0, size, (15, 2)):
        img += 0.5 * peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    return img


@pytest.mark.parametrize("vst", [True, False])
def test_round_trip_is_exact(vst: bool) -> None:
    rng = np.random.default_rng(0)
    norm = Normalizer(offset=OFFSET, gain=GAIN, noise_a=1.0, noise_b=2.25, vst=vst, scale=12.5)
    x = rng.uniform(OFFSET - 2, 60000, size=(64, 64))  # above the GAT floor (offset - 2.6*gain)
    y = norm.forward(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    back = norm.inverse(y)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=2e-6, atol=0.02)


def test_uint16_input_and_torch_path_agree() -> None:
    rng = np.random.default_rng(1)
    norm = Normalizer(offset=OFFSET, gain=GAIN, noise_b=2.25, scale=30.0)
    x = rng.integers(90, 4000, size=(40, 50)).astype(np.uint16)
    y_np = norm.forward(x)
    y_t = norm.forward_torch(torch.from_numpy(x.astype(np.float32)))
    np.testing.assert_allclose(y_t.numpy(), y_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.inverse_torch(torch.from_numpy(y_np)).numpy(), norm.inverse(y_np),
                               rtol=1e-5, atol=1e-3)


def test_gat_floor_and_negative_outputs() -> None:
    norm = Normalizer(offset=OFFSET, gain=GAIN, noise_b=2.25, scale=10.0)
    floor = OFFSET - GAIN * (0.375 + 2.25)  # lowest value the forward transform can represent
    assert norm.forward(np.array([floor - 50.0]))[0] == 0.0
    np.testing.assert_allclose(norm.inverse(np.array([-1.0, 0.0])), [floor, floor], rtol=1e-6)


@pytest.mark.parametrize("lam", [5.0, 20.0, 100.0, 1000.0])
def test_gat_stabilises_variance(lam: float) -> None:
    """Calibrated Poisson-Gaussian data at several levels -> transformed std ~ 1/scale (10%)."""
    rng = np.random.default_rng(int(lam))
    x = _camera(np.full(100_000, lam), rng)
    norm = Normalizer.fit(x.reshape(100, 1000), offset=OFFSET, gain=GAIN, read_var=READ_SD_ADU**2)
    assert norm.noise_a == 1.0 and norm.noise_b == pytest.approx(READ_SD_ADU**2 / GAIN**2)
    std = float(norm.forward(x).std())
    assert std == pytest.approx(1.0 / norm.scale, rel=0.10)


@pytest.mark.parametrize("peak", [10.0, 40.0, 200.0])
def test_estimate_poisson_gaussian_recovers_parameters(peak: float) -> None:
    """var(x) = a*mean + b with a = gain and b = read_var - gain*offset (offset absorbed)."""
    rng = np.random.default_rng(7)
    x = _camera(_scene(peak, rng), rng)
    a, b = estimate_poisson_gaussian(x)
    assert a == pytest.approx(GAIN, rel=0.10)
    assert b == pytest.approx(READ_SD_ADU**2 - GAIN * OFFSET, rel=0.15)


def test_estimate_without_offset_recovers_read_noise() -> None:
    rng = np.random.default_rng(3)
    x = _camera(_scene(30.0, rng, size=256), rng, offset=0.0)
    a, b = estimate_poisson_gaussian(x)
    assert a == pytest.approx(GAIN, rel=0.10)
    assert b == pytest.approx(READ_SD_ADU**2, rel=0.15)


def test_fit_uncalibrated_absorbs_offset_and_stabilises() -> None:
    rng = np.random.default_rng(11)
    frames = [_camera(_scene(40.0, rng), rng) for _ in range(2)]
    norm = Normalizer.fit(frames)
    assert norm.offset == 0.0
    assert norm.gain == pytest.approx(GAIN, rel=0.10)
    assert norm.noise_a == 1.0
    # noise_b = b / a^2 with b = read_var - gain*offset: negative here, and that is intended
    assert norm.noise_b == pytest.approx((READ_SD_ADU**2 - GAIN * OFFSET) / GAIN**2, rel=0.2)
    flat = _camera(np.full((200, 200), 25.0), rng)
    assert float(norm.forward(flat).std()) == pytest.approx(1.0 / norm.scale, rel=0.10)
    values = np.abs(norm.forward(np.stack(frames)))
    assert norm.scale == pytest.approx(float(np.percentile(values * norm.scale, 99.5)), rel=1e-3)


def test_fit_with_gain_only_estimates_noise_b() -> None:
    rng = np.random.default_rng(5)
    x = _camera(_scene(40.0, rng), rng)
    norm = Normalizer.fit(x, offset=OFFSET, gain=GAIN)
    assert norm.noise_b == pytest.approx(READ_SD_ADU**2 / GAIN**2, rel=0.25)


def test_constant_and_dark_images() -> None:
    a, b = estimate_poisson_gaussian(np.full((32, 32), 500.0))
    assert a > 0 and b == 0.0
    norm = Normalizer.fit(np.full((32, 32), 500.0))
    assert norm.scale > 0 and np.isfinite(norm.forward(np.full((4, 4), 500.0))).all()
    np.testing.assert_allclose(norm.inverse(norm.forward(np.full((4, 4), 500.0))), 500.0, rtol=1e-4)
    dark = Normalizer.fit(np.zeros((32, 32)), offset=0.0, gain=1.0, read_var=0.0, vst=False)
    assert dark.scale == 1.0  # nothing positive to scale by: documented fallback


def test_saturation_mask_and_estimation_ignores_saturated() -> None:
    rng = np.random.default_rng(2)
    x = _camera(_scene(40.0, rng), rng)
    x[:40, :40] = 4095.0
    a, _ = estimate_poisson_gaussian(x, saturation=4095.0)
    assert a == pytest.approx(GAIN, rel=0.10)
    norm = Normalizer.fit(x, saturation=4095.0)
    mask = norm.saturated_mask(x)
    assert mask is not None and mask[:40, :40].all() and mask.sum() == 1600
    assert Normalizer().saturated_mask(x) is None


def test_to_dict_from_dict_json_round_trip() -> None:
    norm = Normalizer(offset=np.float64(99.5), gain=2, noise_a=1.0, noise_b=-3.5, vst=True, scale=40.0,
                      saturation=65535)
    data = json.loads(json.dumps(norm.to_dict()))
    assert Normalizer.from_dict(data) == norm
    assert isinstance(data["gain"], float) and data["saturation"] == 65535.0


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([[1.0, np.inf]]), "NaN or infinite"),
        (np.array([["a", "b"]]), "not numeric"),
        (np.array([[True, False]]), "not numeric"),
        (np.array([[1 + 1j]]), "not numeric"),
        (np.zeros((0, 4)), "empty"),
    ],
)
def test_invalid_input_raises_input_data_error(bad: np.ndarray, match: str) -> None:
    with pytest.raises(InputDataError, match=match):
        Normalizer().forward(bad)
    with pytest.raises(InputDataError):
        Normalizer.fit(bad if bad.ndim == 2 and bad.size else np.array([[np.nan] * 4] * 4))


def test_check_image_dimensions_and_tiny_images() -> None:
    with pytest.raises(InputDataError, match="2-D"):
        check_image(np.zeros((2, 3, 4)), "frame", ndim=2)
    with pytest.raises(InputDataError, match="3x3"):
        estimate_poisson_gaussian(np.ones((1, 97)))


@pytest.mark.parametrize("field, value", [("gain", 0.0), ("scale", -1.0), ("noise_a", 0.0), ("offset", float("nan"))])
def test_invalid_parameters_raise_config_error(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        Normalizer(**{field: value})
