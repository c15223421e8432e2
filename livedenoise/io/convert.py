"""Copy a recorded dataset into an OME-Zarr, frame by frame (used when live denoised output is asked as OME-Zarr).

Why record first and convert after: during acquisition the frames' final count, channels and positions are not known,
and an append-only NDTiff is what survives a crash mid-session (every frame written so far stays readable). When the
acquisition ends, the dataset has its final shape and :func:`to_ome_zarr` writes it once, with the batch writer's
layout and metadata (:mod:`livedenoise.io.omezarr`). The OME-Zarr is written under a temporary name and renamed
when complete, so a half-written one never looks finished.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import LivedenoiseError

#: Suffix of an OME-Zarr being written (only such folders, which this module creates, are ever deleted).
PARTIAL = ".partial"


def to_ome_zarr(source: str | os.PathLike[str], target: str | os.PathLike[str],
                provenance: dict[str, Any] | None = None) -> Path:
    """Write every frame of ``source`` (any dataset :func:`livedenoise.io.open_dataset` reads) into a new OME-Zarr
    ``target`` with the same axes, pixel type and provenance (plus ``provenance``); returns ``target``.

    Refuses an existing ``target``. Frames missing from the source (an acquisition stopped early) stay zero.
    """
    from livedenoise.io.formats import open_dataset
    from livedenoise.io.omezarr import create_ome_zarr, forget_open_arrays

    target = Path(target)
    if target.exists():
        raise LivedenoiseError(f"{target} already exists; the OME-Zarr copy of {source} was not written.")
    partial = target.with_name(target.name + PARTIAL)
    if partial.exists():  # an earlier conversion that was interrupted: ours by its name
        shutil.rmtree(partial)
    dataset = open_dataset(source)
    try:
        meta = getattr(dataset, "metadata", {}) or {}
        record = {**(meta.get("provenance") or {}), **(provenance or {}), "converted_from": str(source)}
        out = create_ome_zarr(partial, dataset, dataset.dtype, record)
        lead = tuple(dataset.shape[:-2])
        ones = (1,) * len(lead)
        for index in np.ndindex(*lead):
            frame = np.asarray(dataset.read_frame(index))
            out.write_block([(i, i + 1) for i in index], frame.reshape(ones + frame.shape))
    finally:
        dataset.close()
        forget_open_arrays(partial)
    os.replace(partial, target)
    return target
