"""Optics: a Gaussian PSF (Wang et al. used sigma = 1 px) plus defocus blur away from the focal plane."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def psf_sigma_at(z_um: float, focus_z_um: float, psf_sigma: float, defocus_sigma_per_um: float) -> float:
    """Total Gaussian PSF sigma (px) at height ``z_um``: in-focus sigma combined in quadrature with defocus blur."""
    defocus = defocus_sigma_per_um * abs(z_um - focus_z_um)
    return float(np.hypot(psf_sigma, defocus))


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Convolve with a Gaussian PSF; ``wrap`` mode because the virtual slide is periodic."""
    if sigma <= 0:
        return image
    return gaussian_filter(image, sigma, mode="wrap")
