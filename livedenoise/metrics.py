"""Image-quality metrics: MSE, MAE, PSNR, SSIM (scikit-image) and Fourier Ring Correlation.

Comparing a denoised image with a reference acquired at a different intensity (a longer exposure,
an 8-bit render scaled on its own) needs one documented normalisation, applied identically to every
method (:func:`normalize_pair`):

1. the reference is scaled by its own 0.1 / 99.9 percentiles to about [0, 1], and the candidate image
   with the *same* two numbers (so an intensity mismatch is kept, and penalised);
2. optionally (``affine=True``) the candidate is replaced by the least-squares affine fit ``a*x + b``
   to the reference, which removes any global gain/offset mismatch and is the fair choice where noisy
   and clean were scaled independently (e.g. the 8-bit renders in ``real_pairs_dev``).

PSNR and SSIM then use ``data_range = reference.max() - reference.min()`` of the normalised reference,
SSIM with scikit-image's default 7x7 uniform window. MSE and MAE are in those normalised units
(1.0 = the reference's 0.1-99.9 percentile span), so they are comparable between images.

FRC (:func:`frc_curve`) is computed on the same normalised pair. It is invariant to a global gain
and offset, so the affine step does not change it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

#: Percentiles of the reference that map to 0 and 1 (robust to hot pixels and empty background).
DEFAULT_PERCENTILES = (0.1, 99.9)
#: Half-bit threshold is for two half-data-set images; 1/7 is the usual fixed threshold.
FRC_THRESHOLD = 1.0 / 7.0


@dataclass
class Scores:
    """Scores of one image against its reference (see the module docstring for the units)."""

    mse: float
    mae: float
    psnr: float
    ssim: float
    frc: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_pair(reference: np.ndarray, image: np.ndarray, *, affine: bool = False,
                   percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-normalise ``reference`` and apply the same mapping to ``image`` (optionally affine-fitted).

    Returns float64 copies ``(reference_n, image_n)``. With ``affine=True`` the image is replaced by
    ``a * image_n + b`` with ``(a, b)`` minimising ``sum((a*image_n + b - reference_n)**2)``; a
    constant image becomes the reference mean (the best a constant can do).
    """
    ref = np.asarray(reference, np.float64)
    img = np.asarray(image, np.float64)
    if ref.shape != img.shape:
        raise ValueError(f"reference shape {ref.shape} differs from image shape {img.shape}")
    lo, hi = np.percentile(ref, percentiles)
    span = hi - lo if hi > lo else 1.0
    ref_n, img_n = (ref - lo) / span, (img - lo) / span
    if affine:
        x = img_n - img_n.mean()
        var = float(np.mean(x * x))
        if var > 0:
            a = float(np.mean(x * (ref_n - ref_n.mean()))) / var
            img_n = a * x + ref_n.mean()
        else:
            img_n = np.full_like(ref_n, ref_n.mean())
    return ref_n, img_n


def frc_curve(a: np.ndarray, b: np.ndarray, *, rings: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fourier Ring Correlation of two images: (spatial frequency in cycles/pixel, FRC per ring).

    ``FRC(r) = Re sum F_a F_b* / sqrt(sum |F_a|^2 sum |F_b|^2)`` over the ring ``r``. Both images have
    their mean removed and a Hann window applied (suppresses the cross-shaped edge artefact of the
    FFT's periodic boundary). Rings are ``0.5 / rings`` cycles/pixel wide from 0 to Nyquist (0.5;
    the corners beyond it are ignored); the innermost ring, which holds only the zero frequency (the
    removed mean), is left out. A ring where either image has no power is ``nan``.
    For two images ``s + n1`` and ``s + n2`` with independent white noise, ``FRC = S / (S + N)``
    ring by ring (signal power over signal-plus-noise power); for independent images it is ~0,
    for identical images exactly 1.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"FRC needs two 2-D images of equal shape, got {a.shape} and {b.shape}")
    h, w = a.shape
    if min(h, w) < 4:
        raise ValueError(f"FRC needs images of at least 4x4 pixels, got {a.shape}")
    win = np.outer(np.hanning(h), np.hanning(w))
    fa = np.fft.fft2((a - a.mean()) * win)
    fb = np.fft.fft2((b - b.mean()) * win)
    fy = np.fft.fftfreq(h)
    fx = np.fft.fftfreq(w)
    r = np.hypot(fy[:, None], fx[None, :])
    n = int(rings or min(h, w) // 2)
    idx = np.minimum((r / 0.5 * n).astype(np.int64), n).ravel()  # bin n collects the corners (dropped)
    num = np.bincount(idx, (fa * np.conj(fb)).real.ravel(), n + 1)[:n]
    da = np.bincount(idx, (np.abs(fa) ** 2).ravel(), n + 1)[:n]
    db = np.bincount(idx, (np.abs(fb) ** 2).ravel(), n + 1)[:n]
    denom = np.sqrt(da * db)
    tiny = 1e-12 * max(float(da.max(initial=0.0)), float(db.max(initial=0.0)), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(denom > tiny, num / np.where(denom > 0, denom, 1.0), np.nan)
    freqs = (np.arange(n) + 0.5) / n * 0.5
    return freqs[1:], curve[1:]


def mean_frc(a: np.ndarray, b: np.ndarray, *, rings: int | None = None) -> float:
    """Mean of the FRC curve over the rings up to Nyquist (Wang et al. report the mean FRC).

    Rings without power are skipped. ``nan`` when no ring has power (constant images).
    """
    curve = frc_curve(a, b, rings=rings)[1]
    finite = curve[np.isfinite(curve)]
    return float(finite.mean()) if finite.size else float("nan")


def frc_resolution(a: np.ndarray, b: np.ndarray, *, threshold: float = FRC_THRESHOLD) -> float:
    """First spatial frequency (cycles/pixel) where the FRC drops below ``threshold`` (0.5 if never)."""
    freqs, curve = frc_curve(a, b)
    below = np.nonzero(np.nan_to_num(curve, nan=0.0) < threshold)[0]
    return float(freqs[below[0]]) if below.size else 0.5


def score(reference: np.ndarray, image: np.ndarray, *, affine: bool = False, frc: bool = False,
          normalize: bool = True) -> Scores:
    """MSE, MAE, PSNR, SSIM (and mean FRC) of ``image`` against ``reference`` after :func:`normalize_pair`.

    ``normalize=False`` scores the arrays as given (``data_range`` still from the reference).
    PSNR is ``inf`` for identical images; SSIM is ``nan`` for images smaller than its 7x7 window.
    """
    if normalize:
        ref, img = normalize_pair(reference, image, affine=affine)
    else:
        ref, img = np.asarray(reference, np.float64), np.asarray(image, np.float64)
        if ref.shape != img.shape:
            raise ValueError(f"reference shape {ref.shape} differs from image shape {img.shape}")
    data_range = float(ref.max() - ref.min()) or 1.0
    diff = img - ref
    mse = float(np.mean(diff * diff))
    return Scores(
        mse=mse,
        mae=float(np.mean(np.abs(diff))),
        psnr=float(peak_signal_noise_ratio(ref, img, data_range=data_range)) if mse > 0 else math.inf,
        ssim=float(structural_similarity(ref, img, data_range=data_range)) if min(ref.shape[-2:]) >= 7 else math.nan,
        frc=mean_frc(ref, img) if frc else None,
    )
