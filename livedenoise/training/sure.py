"""Stein's unbiased risk estimate (SURE): the full-image error of a denoiser, measured without a clean image.

For Gaussian noise of known standard deviation ``sigma`` (what the variance-stabilising normaliser makes
of camera noise: ``Normalizer.noise_std``), Stein's lemma gives, for any weakly differentiable
denoiser ``f`` and noisy image ``x = s + n`` of ``N`` pixels::

    E ||f(x) - s||^2 / N  =  E [ ||f(x) - x||^2 / N  -  sigma^2  +  2 sigma^2 div f(x) / N ]

The divergence is estimated by one Monte-Carlo probe (Ramani, Blu & Unser 2008):
``div f(x) ~ b . (f(x + eps b) - f(x)) / eps`` with ``b`` standard normal.

Why it matters here (Soltanayev & Chun 2018 trained denoisers with it): unlike blind-spot objectives
(Noise2Self, Noise2Same), SURE scores the very function inference uses (the full image through the
network), so fine-tuning a backbone that was pretrained supervised on full images does not push it into
a masked-input regime; and the same number, computed on held-out pixels, is an unbiased estimate of the
error against the (unknown) clean image for the backbone *and* for the adapted model, which is the
criterion a swap needs. It assumes pixel-independent noise of the stated level: a wrong noise model
(or spatially correlated noise) biases it, as it biases every self-supervised objective.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

#: Finite-difference step of the divergence probe, as a fraction of the noise standard deviation.
EPS_FRACTION = 1e-2


def sure_loss(model: torch.nn.Module, x: torch.Tensor, noise_std: float,
              probe: torch.Tensor | None = None, variance: torch.Tensor | None = None) -> torch.Tensor:
    """SURE estimate of the mean squared error of ``model(x)`` against the clean image ([B, C, H, W]).

    ``probe``: the standard-normal divergence probe (drawn when None; pass a fixed one for a
    validation score that is comparable between weights). ``variance``: each pixel's noise variance in units
    of ``noise_std**2`` (broadcastable to ``x``; default 1 everywhere). Stein's lemma holds pixel by pixel,
    ``E[(f_i - x_i)^2] = E[(f_i - s_i)^2] + v_i - 2 v_i E[df_i/dx_i]``, so a camera whose pixels differ in read
    noise (sCMOS) is scored with its own variances: with one level for all, the estimate of a model that passes
    more noise through is too low wherever the true variance is higher (measured on one simulated frame: a
    fine-tune that lost 0.32 dB against the sample scored 7 % better than its backbone with one level for all;
    ``benchmarks/results/2026-12-05-gat-target/``).
    """
    sigma = float(noise_std)
    b = torch.randn_like(x) if probe is None else probe
    eps = EPS_FRACTION * sigma
    out = model(x)
    v = torch.ones((), dtype=x.dtype, device=x.device) if variance is None else variance
    div = (v * b * (model(x + eps * b) - out)).mean() / eps  # per pixel, variance-weighted
    return ((out - x) ** 2).mean() - sigma * sigma * v.expand_as(x).mean() + 2.0 * sigma * sigma * div


#: Photoelectron levels and read variances (e-²) of :func:`stabilised_variance`'s table; above the last level the
#: first-order formula is used (within 1 % there).
_TABLE_LAM = np.concatenate([[0.0], np.geomspace(0.02, 100.0, 48)])
_TABLE_READ = np.geomspace(0.01, 4000.0, 56)
_HERMITE = np.polynomial.hermite.hermgauss(48)


@lru_cache(maxsize=8)
def _variance_table(noise_b: float) -> np.ndarray:
    """Var[GAT] on the (``_TABLE_LAM`` x ``_TABLE_READ``) grid for the GAT of read variance ``noise_b``."""
    nodes, weights = _HERMITE
    weights = weights / np.sqrt(np.pi)
    table = np.empty((_TABLE_LAM.size, _TABLE_READ.size))
    for i, lam in enumerate(_TABLE_LAM):
        k = np.arange(int(lam + 12.0 * np.sqrt(lam) + 20.0))
        logp = k * np.log(max(lam, 1e-300)) - lam - np.cumsum(np.log(np.maximum(k, 1)))
        pk = np.exp(logp) if lam > 0 else (k == 0).astype(float)
        for j, read in enumerate(_TABLE_READ):
            e = k[:, None] + np.sqrt(2.0 * read) * nodes[None, :]  # Poisson count + Gaussian read noise
            y = 2.0 * np.sqrt(np.maximum(e + 0.375 + noise_b, 0.0))
            w = pk[:, None] * weights[None, :]
            mean = (w * y).sum()
            table[i, j] = (w * (y - mean) ** 2).sum()
    return table


def stabilised_variance(lam: np.ndarray, read_var: np.ndarray, noise_b: float) -> np.ndarray:
    """Noise variance, after the GAT ``2 sqrt(e + 3/8 + noise_b)``, of a pixel with ``lam`` photoelectrons (Poisson)
    and Gaussian read noise of variance ``read_var`` (e-²; arrays of one shape): what SURE needs per pixel.

    The GAT makes it 1 where ``read_var == noise_b`` and the count is not tiny; a pixel of another read variance
    departs from 1 in a way the first-order formula ``(lam + read_var) / (lam + noise_b)`` gets wrong at low counts,
    where the square root compresses a large read noise (the simulated Zyla at 5 photons: mean 1.32 by the formula
    against 1.08 measured over 200 exposures). Computed exactly (Poisson sum, Gauss-Hermite quadrature) on a grid
    for this ``noise_b`` and interpolated (bilinear in the count and the log of the read variance)."""
    from scipy.interpolate import RegularGridInterpolator

    lam = np.maximum(np.asarray(lam, np.float64), 0.0)
    read = np.clip(np.asarray(read_var, np.float64), _TABLE_READ[0], _TABLE_READ[-1])
    table = RegularGridInterpolator((_TABLE_LAM, np.log(_TABLE_READ)), _variance_table(float(noise_b)))
    inside = lam <= _TABLE_LAM[-1]
    out = (lam + read) / np.maximum(lam + noise_b, 1e-6)  # first order: right at high counts
    pts = np.stack([lam[inside], np.log(read[inside])], axis=-1)
    out[inside] = table(pts)
    return out
