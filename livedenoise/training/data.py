"""Training data: normalised images, held-out validation strips, and augmented patch batches.

Validation uses a strip at the bottom of *every* image rather than whole held-out images, because
fine-tuning must work from a single image (Wang et al.) and from a handful of pairs (CNNT): a
strip-wise split always leaves both training and validation data, and never leaks a validation pixel
into a training patch.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from livedenoise.errors import InputDataError
from livedenoise.normalization import Normalizer, check_image

log = logging.getLogger("livedenoise")


@dataclass
class ImageSet:
    """Normalised training images (float32, 2-D) with optional clean targets of the same shapes."""

    noisy: list[np.ndarray]
    clean: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not self.noisy:
            raise InputDataError("no training images were given")
        if self.clean is not None:
            if len(self.clean) != len(self.noisy):
                raise InputDataError(f"{len(self.noisy)} noisy images but {len(self.clean)} clean images; "
                                     "pairs must match")
            for i, (n, c) in enumerate(zip(self.noisy, self.clean, strict=True)):
                if n.shape != c.shape:
                    raise InputDataError(f"pair {i}: noisy shape {n.shape} differs from clean shape {c.shape}")

    @property
    def supervised(self) -> bool:
        return self.clean is not None


def as_frames(images: Sequence[np.ndarray] | np.ndarray, what: str) -> list[np.ndarray]:
    """A list of 2-D frames from a 2-D image, an (N, Y, X) stack or a sequence of 2-D images; validated."""
    if isinstance(images, np.ndarray):
        arr = check_image(images, what, min_ndim=2)
        return [arr] if arr.ndim == 2 else list(arr.reshape(-1, *arr.shape[-2:]))
    frames = [check_image(im, f"{what} #{i}", ndim=2) for i, im in enumerate(images)]
    if not frames:
        raise InputDataError(f"{what}: no images given")
    return frames


def normalizer_for(frames: Sequence[np.ndarray], *, like: Normalizer | None = None, calibration=None,
                   saturation: float | None = None, same_field: bool = False, averaged: int = 1) -> Normalizer:
    """The normaliser for a new experiment's frames in a backbone's convention (see :mod:`livedenoise.noise_model`)."""
    from livedenoise.noise_model import normalizer_for as _fit

    return _fit(frames, like=like, calibration=calibration, saturation=saturation, same_field=same_field,
                averaged=averaged)


def split_strips(images: list[np.ndarray], fraction: float,
                 min_rows: int = 8) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each image into a training part (top) and a validation strip (bottom ``fraction`` of rows)."""
    train, val = [], []
    for im in images:
        h = im.shape[-2]
        rows = round(h * fraction)
        if h < 2 * min_rows or rows < 1:
            train.append(im)  # too small to split: used for both (reported by the caller as such)
            val.append(im)
            continue
        rows = max(rows, min_rows)
        train.append(im[..., : h - rows, :])
        val.append(im[..., h - rows:, :])
    return train, val


def _augment(arrs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(a[..., ::-1] if flip else a)
    return out


class PatchSampler:
    """Random square patches with flips / 90-degree rotations, as a batch tensor [B, 1, P, P].

    The patch size shrinks to the smallest image when images are smaller than ``patch_size``.
    """

    def __init__(self, data: ImageSet, patch_size: int, batch_size: int, seed: int = 0, augment: bool = True) -> None:
        self.data = data
        smallest = min(min(im.shape[-2:]) for im in data.noisy)
        self.patch = int(min(patch_size, smallest))
        self.batch_size = batch_size
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        areas = np.array([im.shape[-2] * im.shape[-1] for im in data.noisy], np.float64)
        self._weights = areas / areas.sum()

    def centre_crop(self, i: int) -> list[np.ndarray]:
        im = self.data.noisy[i]
        h, w = im.shape[-2:]
        y = int(self.rng.integers(0, h - self.patch + 1))
        x = int(self.rng.integers(0, w - self.patch + 1))
        sl = (..., slice(y, y + self.patch), slice(x, x + self.patch))
        arrs = [im[sl]] + ([self.data.clean[i][sl]] if self.data.clean is not None else [])
        return _augment(arrs, self.rng) if self.augment else arrs

    def sample(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One batch: (noisy, clean or None), float32 tensors [B, 1, P, P]."""
        idx = self.rng.choice(len(self.data.noisy), size=self.batch_size, p=self._weights)
        crops = [self.centre_crop(int(i)) for i in idx]
        x = torch.from_numpy(np.stack([c[0] for c in crops])[:, None].astype(np.float32))
        y = (torch.from_numpy(np.stack([c[1] for c in crops])[:, None].astype(np.float32)) if self.data.supervised
             else None)
        return x, y

    def fixed_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``n`` reproducible batches (no augmentation) for validation."""
        keep = self.augment, self.rng
        self.augment, self.rng = False, np.random.default_rng(12345)
        try:
            return [self.sample() for _ in range(n)]
        finally:
            self.augment, self.rng = keep
