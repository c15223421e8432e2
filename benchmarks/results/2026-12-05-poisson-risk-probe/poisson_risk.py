# ruff: noqa: E501
"""Probe, not shipped (2026-12-05): an unbiased estimate of a denoiser's error on photon-counting data, without a clean image.

Why not SURE alone: Stein's lemma (``livedenoise/training/sure.py``) holds for Gaussian noise, and the
variance-stabilised counts of a dim frame are not Gaussian. On simulated frames at 5 photons SURE ranked a
self-supervised fine-tune far ahead of its backbone (0.0502 → 0.0400) where the true error ranked them the other way
(0.03137 → 0.03161), with every pixel's variance measured (``benchmarks/results/2026-12-05-gat-target/``).

Counts have an identity of their own. For a pixel whose photon count is ``P ~ Poisson(lam)`` and any function ``g``,
``E[(P - lam) g(P)] = E[P (g(P) - g(P - 1))]`` (Chen's identity), which is exact at any count. With Gaussian read noise
``G`` of variance ``s2`` added (``c = P + G``), Stein's lemma covers ``G`` and the two combine, to first order in the
read noise, into ``E[(c - lam) g_k(c)] ~ E[(c + s2) (g_k(c) - g_k(c - 1_k))]`` where ``c - 1_k`` is the frame with
one count taken from pixel ``k``. With ``E[c + s2] = var(c)``, the error of the denoiser's output ``g_k`` (in counts)
against the pixel's mean is then estimated by::

    E (g_k - lam_k)^2  =  E[ (g_k - c_k)^2  +  2 (c_k + s2_k) (g_k(c) - g_k(c - 1_k))  -  (c_k + s2_k) ]

(Le Montagner, Angelini & Olivo-Marin 2014 derive the same PG-URE with a second-order expansion instead of the
exact one-count difference). It scores the error in linear units, as PSNR against the sample does, not in the
stabilised domain. The one-count differences are measured, not linearised: a grid of pixels ``spacing`` apart
loses one count at once and the denoiser runs again, for every offset of the grid, so each pixel's difference is
measured once; the other pixels of its grid, at least ``spacing`` away, add a small error that is nearly the
same for the two denoisers a check compares.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

#: Pixels that lose one count together are this far apart (in rows and columns).
SPACING = 16
#: Perturbed copies of the held-out rows per network call.
BATCH = 16


def poisson_risk(denoise_counts: Callable[[np.ndarray], np.ndarray], counts: np.ndarray, read_var: np.ndarray | float,
                 spacing: int = SPACING, valid: np.ndarray | None = None) -> float:
    """Mean estimated squared error (counts²) of ``denoise_counts`` on ``counts`` against its unknown mean.

    ``denoise_counts``: frames ``[B, H, W]`` of counts (photoelectrons per Poisson unit) -> the denoised means,
    same shape. ``counts``: one ``[H, W]`` frame. ``read_var``: the Gaussian noise variance of each pixel (or of
    all) in counts². ``valid``: pixels to score (e.g. not saturated); all by default."""
    c = np.asarray(counts, np.float64)
    s2 = np.broadcast_to(np.asarray(read_var, np.float64), c.shape)
    base = np.asarray(denoise_counts(c[None].astype(np.float32))[0], np.float64)
    diff = np.zeros_like(c)
    offsets = [(oy, ox) for oy in range(min(spacing, c.shape[0])) for ox in range(min(spacing, c.shape[1]))]
    for start in range(0, len(offsets), BATCH):
        chunk = offsets[start:start + BATCH]
        batch = np.repeat(c[None], len(chunk), axis=0)
        for i, (oy, ox) in enumerate(chunk):
            batch[i, oy::spacing, ox::spacing] -= 1.0
        out = np.asarray(denoise_counts(batch.astype(np.float32)), np.float64)
        for i, (oy, ox) in enumerate(chunk):
            diff[oy::spacing, ox::spacing] = base[oy::spacing, ox::spacing] - out[i, oy::spacing, ox::spacing]
    var = c + s2
    risk = (base - c) ** 2 + 2.0 * var * diff - var
    return float(risk[valid].mean() if valid is not None else risk.mean())


def network_in_counts(model: torch.nn.Module, norm) -> Callable[[np.ndarray], np.ndarray]:
    """What the product does to a frame (normalise, run ``model``, invert), seen in counts: the function
    :func:`poisson_risk` scores. A count is one Poisson unit of the normaliser's noise model (``noise_a``
    photoelectrons; one photoelectron with a camera calibration), taken after the camera's offset and gain (the
    per-pixel maps where calibrated); the output is read with the normaliser's scalars, as the denoised image
    carries no fixed pattern."""
    unit = float(norm.noise_a)
    out_scale = float(norm.gain) * unit

    def run(frames: np.ndarray) -> np.ndarray:
        x = norm._forward(np.asarray(frames, np.float64) * unit, 0.0, 1.0)
        with torch.no_grad():
            y = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None])[:, 0].numpy()
        return (norm.inverse(y).astype(np.float64) - float(norm.offset)) / out_scale

    return run


def counts_of(frame: np.ndarray, norm) -> tuple[np.ndarray, np.ndarray | float]:
    """A raw frame (ADU, its full size) as counts for :func:`network_in_counts`, with each pixel's Gaussian
    variance in counts² (the normaliser's ``noise_b``, or a calibration's read-noise map when given via
    ``read_var_e2``)."""
    offset, gain = norm._maps_for(frame.shape)
    unit = float(norm.noise_a)
    return (np.asarray(frame, np.float64) - offset) / (np.asarray(gain, np.float64) * unit), norm.noise_b / unit**2
