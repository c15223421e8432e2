"""Metric correctness on cases whose answer is known: identical images, known noise levels, FRC."""
from __future__ import annotations

import math

import numpy as np
import pytest

from livedenoise.metrics import frc_curve, frc_resolution, mean_frc, normalize_pair, score


def smooth_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """A structured image in [0, 1] (blurred random blobs)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((size, size)), 3)
    return (img - img.min()) / (img.max() - img.min())


def test_identical_images_score_perfectly():
    ref = smooth_image()
    s = score(ref, ref.copy(), frc=True)
    assert s.mse == 0 and s.mae == 0
    assert math.isinf(s.psnr)
    assert s.ssim == pytest.approx(1.0)
    assert s.frc == pytest.approx(1.0)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_known_gaussian_noise_level(sigma):
    rng = np.random.default_rng(1)
    ref = smooth_image(256)
    noisy = ref + rng.normal(0, sigma, ref.shape)
    s = score(ref, noisy, normalize=False)
    assert s.mse == pytest.approx(sigma**2, rel=0.03)
    assert s.mae == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=0.03)
    assert s.psnr == pytest.approx(10 * math.log10(1.0 / sigma**2), abs=0.15)  # data range of ref is 1
    assert s.ssim < 1.0


def test_more_noise_scores_worse():
    rng = np.random.default_rng(2)
    ref = smooth_image()
    low, high = (score(ref, ref + rng.normal(0, s, ref.shape), frc=True) for s in (0.02, 0.2))
    assert low.mse < high.mse and low.psnr > high.psnr and low.ssim > high.ssim and low.frc > high.frc


def test_percentile_normalisation_is_scale_free_and_keeps_mismatch():
    rng = np.random.default_rng(3)
    ref = smooth_image()
    img = ref + rng.normal(0, 0.05, ref.shape)
    base = score(ref, img)
    scaled = score(1000 * ref + 100, 1000 * img + 100)  # same pair in other units
    assert scaled.mse == pytest.approx(base.mse, rel=1e-9)
    assert scaled.ssim == pytest.approx(base.ssim, rel=1e-9)
    mismatched = score(ref, 3 * img + 7)  # intensity mismatch is penalised without the affine fit...
    assert mismatched.mse > 100 * base.mse
    fitted = score(ref, 3 * img + 7, affine=True)  # ...and removed by it
    assert fitted.mse == pytest.approx(score(ref, img, affine=True).mse, rel=1e-6)
    assert fitted.mse <= base.mse * 1.0001


def test_normalize_pair_maps_reference_percentiles_and_handles_constant_image():
    ref = np.linspace(0, 10, 10_000).reshape(100, 100)
    r, i = normalize_pair(ref, ref)
    assert np.percentile(r, 0.1) == pytest.approx(0.0, abs=1e-9)
    assert np.percentile(r, 99.9) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(i, r)
    r, i = normalize_pair(ref, np.full_like(ref, 5.0), affine=True)
    np.testing.assert_allclose(i, r.mean())  # the best constant is the reference mean
    with pytest.raises(ValueError, match="differs"):
        normalize_pair(ref, ref[:50])


def test_frc_of_image_with_itself_is_one_everywhere():
    img = smooth_image(64) + np.random.default_rng(4).normal(0, 0.1, (64, 64))
    freqs, curve = frc_curve(img, img)
    assert len(freqs) == len(curve) == 31  # 32 rings up to Nyquist, the zero-frequency ring left out
    assert 0 < freqs[0] < freqs[-1] < 0.5
    np.testing.assert_allclose(curve, 1.0)


def test_frc_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(256, 256)), rng.normal(size=(256, 256))
    assert abs(mean_frc(a, b)) < 0.03
    assert frc_resolution(a, b) < 0.05  # falls below 1/7 almost at once


def test_frc_equals_signal_over_signal_plus_noise():
    """Two noisy copies s+n1, s+n2 of a white signal: FRC = S/(S+N) in every ring (0.5 and 0.8 here)."""
    rng = np.random.default_rng(6)
    s = rng.normal(size=(256, 256))
    for noise_var, expected in ((1.0, 0.5), (0.25, 0.8)):
        sd = math.sqrt(noise_var)
        a, b = s + rng.normal(0, sd, s.shape), s + rng.normal(0, sd, s.shape)
        assert mean_frc(a, b) == pytest.approx(expected, abs=0.03)


def test_frc_is_invariant_to_gain_and_offset_and_rejects_bad_shapes():
    rng = np.random.default_rng(7)
    a, b = smooth_image(64), smooth_image(64) + rng.normal(0, 0.1, (64, 64))
    assert mean_frc(a, 5 * b + 3) == pytest.approx(mean_frc(a, b), rel=1e-9)
    assert math.isnan(mean_frc(np.ones((16, 16)), np.ones((16, 16))))  # no power in any ring
    with pytest.raises(ValueError):
        frc_curve(a, b[:32])
    with pytest.raises(ValueError):
        frc_curve(np.ones(16), np.ones(16))


def test_ssim_is_nan_for_images_smaller_than_its_window():
    s = score(np.arange(25.0).reshape(5, 5), np.arange(25.0).reshape(5, 5) + 1)
    assert math.isnan(s.ssim) and s.mse > 0
