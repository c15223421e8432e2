"""Frames from TIFF files, for the commands that take images (``finetune --images``, ``export --sample``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def read_frames(paths: list[Path]) -> list[np.ndarray]:
    """Every 2-D frame of every file (stacks are split), with one clear error naming a file that is not images."""
    from livedenoise.errors import InputDataError
    from livedenoise.io import read_tiff
    from livedenoise.noise_model import MIN_FIT_SIDE
    from livedenoise.normalization import check_image

    frames: list[np.ndarray] = []
    for path in paths:
        if Path(path).is_dir():
            raise InputDataError(f"{path}: is a folder; expected TIFF files (give the files, e.g. {path}/*.tif)")
        arr = read_tiff(path, grey=True)
        if arr.ndim < 2:
            raise InputDataError(f"{path}: expected 2-D images, got shape {arr.shape}")
        check_image(arr, f"image {path}")  # its dtype and values, named by the file (not "image #3" of the whole list)
        if min(arr.shape[-2:]) < MIN_FIT_SIDE:  # what the noise fit needs, said here where the file is known
            raise InputDataError(f"{path}: frames of {arr.shape[-2]}x{arr.shape[-1]} pixels; expected at least "
                                 f"{MIN_FIT_SIDE}x{MIN_FIT_SIDE}.")
        if arr.size and arr.max() == arr.min():
            raise InputDataError(f"{path}: every pixel is {float(arr.flat[0]):g}; expected noisy camera frames.")
        frames.extend(arr.reshape(-1, *arr.shape[-2:]))
    return frames
