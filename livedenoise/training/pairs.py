"""Folders of low/high-SNR pairs: ``<dir>/<name>_noisy.tif`` + ``<name>_clean.tif``, flat or one level of sets.

This is the layout of ``livedenoise finetune --pairs``, ``pretrain --pairs`` and ``evaluate --pairs``
(and of ``../shared/data/real_pairs_dev``). A noisy file without its clean partner (or the reverse),
or two images of different shapes, is an error naming the file, never silently skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedenoise.errors import InputDataError


@dataclass
class Pair:
    """One low/high-SNR pair as stored (original dtype)."""

    set: str
    name: str
    noisy: np.ndarray
    clean: np.ndarray
    noisy_path: Path


def read_image(path: Path) -> np.ndarray:
    """A 2-D image from a TIFF, with one clear error for unreadable files or other dimensions."""
    from livedenoise.io import read_tiff

    arr = np.squeeze(read_tiff(path, grey=True))
    if arr.ndim != 2:
        raise InputDataError(f"{path}: expected a single 2-D image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputDataError(f"{path}: expected numeric pixels, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # said now, with the file, not after training starts
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputDataError(f"{path}: contains {bad} NaN or infinite value(s); expected finite pixel values")
    if arr.size and arr.min() == arr.max():
        raise InputDataError(f"{path}: every pixel is {arr.flat[0]}; a pair's images must show the sample (a constant "
                             "image would teach the network to erase it)")
    return arr


def load_pair_folder(path: str | Path) -> list[Pair]:
    """Every pair under ``path`` (flat, or in sub-folders one level down), sorted by set and name."""
    root = Path(path)
    if not root.is_dir():
        raise InputDataError(f"{root}: pair folder not found (expected <name>_noisy.tif + <name>_clean.tif files)")
    pairs: list[Pair] = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        noisy = {p.name[: -len("_noisy.tif")]: p for p in folder.glob("*_noisy.tif")}
        clean = {p.name[: -len("_clean.tif")]: p for p in folder.glob("*_clean.tif")}
        for name in sorted(set(noisy) ^ set(clean)):
            have, missing = (noisy[name], f"{name}_clean.tif") if name in noisy else (clean[name], f"{name}_noisy.tif")
            raise InputDataError(f"{have}: has no partner {missing} in {folder}; pairs must be complete")
        for name in sorted(noisy):
            n, c = read_image(noisy[name]), read_image(clean[name])
            if n.shape != c.shape:
                raise InputDataError(f"{noisy[name]}: shape {n.shape} differs from its clean image {c.shape}")
            set_name = "" if folder == root else folder.name
            pairs.append(Pair(set_name, name, n, c, noisy[name]))
    if not pairs:
        raise InputDataError(f"{root}: no <name>_noisy.tif / <name>_clean.tif pairs found")
    return pairs
