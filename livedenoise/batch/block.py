"""One block of a job: read, denoise, cast, write in place. Runs in a worker thread or on a dask worker."""
from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.batch.models import DenoiserOptions, ModelRef, _is_temporal, _model_thread, get_denoiser
from livedenoise.batch.planning import read_ranges
from livedenoise.cpu_memory import return_freed_memory
from livedenoise.errors import InputDataError
from livedenoise.io import (
    ImageDataset,
    NpyBlockTarget,
    OmeTiffTarget,
    SourceSpec,
    open_dataset,
)
from livedenoise.io.omezarr import OmeZarrTarget

#: Inputs opened by block workers, per process; the most recently used ``MAX_OPEN_DATASETS`` stay open (a
#: long-lived dask worker serving many jobs does not keep every file it ever read).
MAX_OPEN_DATASETS = 16
_DATASETS: OrderedDict[tuple[SourceSpec, tuple[int, ...]], ImageDataset] = OrderedDict()
_DATASETS_LOCK = threading.Lock()


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs for one block; small and picklable (paths, not data or models)."""

    index: int
    ranges: tuple[tuple[int, int], ...]
    source: SourceSpec
    models: tuple[ModelRef, ...]
    channel_axis: int | None
    temporal_axis: int | None
    options: DenoiserOptions
    out_dtype: str
    target: OmeTiffTarget | OmeZarrTarget | NpyBlockTarget
    stamp: tuple[int, int] = (0, 0)
    #: Slices read beyond each side of the block along each leading axis (``BlockPlan.context``): a temporal
    #: network's neighbours; only the block's own frames are written.
    context: tuple[int, ...] = ()


@dataclass(frozen=True)
class BlockResult:
    index: int
    frames: int
    pixels: int
    clipped: int
    seconds: float
    check: dict[str, Any] | None = None  # residual check of the block's first frame (ResidualCheck.to_dict())
    input_digest: str | None = None  # of the input pixels this block was made from (resume verifies it)


def block_digest(block: np.ndarray) -> str:
    """A 128-bit BLAKE2 digest of a block's pixels: ``--resume`` re-reads every finished block's input and
    compares, so an input changed in place (same size, same first and last MiB) is never mixed with the
    old output. Reading is far cheaper than denoising."""
    return hashlib.blake2b(np.ascontiguousarray(block).data, digest_size=16).hexdigest()


def source_stamp(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(size, mtime_ns) of an input file (of the NDTiff index, or an OME-Zarr's root metadata, for a dataset folder):
    changes when it is rewritten."""
    p = Path(path)
    if p.is_dir():
        p = next((p / n for n in ("NDTiff.index", "zarr.json", ".zattrs") if (p / n).is_file()), p)
    st = p.stat()
    return (int(st.st_size), int(st.st_mtime_ns))


def _dataset_for(spec: SourceSpec, stamp: tuple[int, int]) -> ImageDataset:
    """The opened input for a job, cached per process; keyed by the file's stamp so a rewritten input is re-opened."""
    key = (spec, tuple(stamp))
    with _DATASETS_LOCK:
        ds = _DATASETS.get(key)
        if ds is None:
            if source_stamp(spec.path) != tuple(stamp):
                raise InputDataError(f"{spec.path}: the input changed while it was being denoised; rerun with --resume "
                                     "or --overwrite once it is complete.")
            ds = _DATASETS[key] = open_dataset(spec.path, axes=spec.axes)
        _DATASETS.move_to_end(key)
        while len(_DATASETS) > MAX_OPEN_DATASETS:
            _DATASETS.popitem(last=False)  # dropped, not closed: a job still using it holds its own reference
    return ds


def share_dataset(ds: ImageDataset) -> tuple[SourceSpec, tuple[int, int]]:
    """Lend an input the job already opened to the block workers of this process; returns the key to forget it by."""
    key = (ds.spec, source_stamp(ds.spec.path))
    with _DATASETS_LOCK:
        _DATASETS[key] = ds
    return key


def forget_datasets(keys: list[tuple[SourceSpec, tuple[int, int]]]) -> None:
    """Drop the inputs a finished job lent (:func:`share_dataset`); the job closes them itself."""
    with _DATASETS_LOCK:
        for key in keys:
            _DATASETS.pop(key, None)


def cast_output(out: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """float32 result -> ``dtype``: integers are rounded and clipped to the type's range; returns the clipped count."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return out.astype(dtype, copy=False), 0
    info = np.iinfo(dtype)
    np.rint(out, out=out)
    clipped = int(np.count_nonzero(out < info.min) + np.count_nonzero(out > info.max))
    np.clip(out, info.min, info.max, out=out)
    return out.astype(dtype), clipped


def denoise_block(denoiser: Any, block: np.ndarray, temporal_axis: int | None) -> np.ndarray:
    """Denoise a block (leading axes + Y, X): frame by frame for 2-D nets, along ``temporal_axis`` for 2D+T nets."""
    if temporal_axis is not None and _is_temporal(denoiser):
        moved = np.moveaxis(block, temporal_axis, -3)
        return np.moveaxis(denoiser.denoise_stack(moved), -3, temporal_axis)
    flat = block.reshape((-1, *block.shape[-2:]))
    return np.asarray(denoiser.denoise_stack(flat), dtype=np.float32).reshape(block.shape)


def process_block(job: BlockJob) -> BlockResult:
    """Read, denoise, cast and write one block; returns what was done (the driver records it).

    The passes reuse freed memory within the block (:mod:`livedenoise.cpu_memory`); after the block, done or
    failed, the freed memory goes back to the system, so between blocks the job holds only what it uses and its
    memory budget holds. That hand-back runs on the model thread, between two passes, never under one (another
    block thread's pass would fault its pages in again)."""
    try:
        return _process_block(job)
    finally:
        _model_thread().submit(return_freed_memory).result()


def _process_block(job: BlockJob) -> BlockResult:
    t0 = time.perf_counter()
    dataset = _dataset_for(job.source, job.stamp)
    read = read_ranges(job.ranges, job.context, dataset.shape[:-2])
    key = (*tuple(slice(a, b) for a, b in read), slice(None), slice(None))
    block = dataset.reader[key]
    # the block's own frames within what was read
    own = (*tuple(slice(a - r, b - r) for (a, b), (r, _) in zip(job.ranges, read, strict=True)), slice(None),
           slice(None))
    ref = job.models[0]
    if len(job.models) > 1 and job.channel_axis is not None:
        ref = job.models[job.ranges[job.channel_axis][0]]
    check = None
    digest = block_digest(block)
    if ref.passthrough:
        out = np.array(block[own], dtype=np.float32)
    else:
        denoiser = get_denoiser(ref, job.options)
        out = _model_thread().submit(denoise_block, denoiser, block, job.temporal_axis).result()
        out = np.ascontiguousarray(out[own])  # the neighbours read for context are not this block's to write
        check = _block_check(block[own], out, denoiser)
    del block
    out, clipped = cast_output(out, np.dtype(job.out_dtype))
    if isinstance(job.target, OmeTiffTarget):
        _write_ome_block(job.target, job.ranges, out)
    elif isinstance(job.target, OmeZarrTarget):
        job.target.write_block(job.ranges, out)
    else:
        job.target.write_block(job.index, out)
    frames = int(np.prod(out.shape[:-2], dtype=np.int64))
    return BlockResult(job.index, frames, frames * out.shape[-1] * out.shape[-2], clipped, time.perf_counter() - t0,
                       check, digest)


def _block_check(block: np.ndarray, out: np.ndarray, denoiser: Any) -> dict[str, Any] | None:
    """Residual check of the block's first frame against the denoiser's noise model (cheap: one frame)."""
    from livedenoise.bioimageio_import import ForeignNetwork
    from livedenoise.normalization import Normalizer
    from livedenoise.residual_check import check_residual

    norm = getattr(denoiser, "normalizer", None)
    if not isinstance(norm, Normalizer) or isinstance(getattr(denoiser, "model", None), ForeignNetwork):
        return None  # no noise model to check against (a bare model, or a Model Zoo one run as it is)
    raw = np.asarray(block).reshape((-1, *block.shape[-2:]))[0]
    return check_residual(raw, out.reshape((-1, *out.shape[-2:]))[0], norm).to_dict()


def _write_ome_block(target: OmeTiffTarget, ranges: tuple[tuple[int, int], ...], out: np.ndarray) -> None:
    """Write a block as runs of frames that are contiguous in the file (one run when the block is)."""
    lead = out.shape[:-2]
    # the innermost axes that the block covers entirely form contiguous runs together with the next one
    k = len(lead)
    while k > 0 and ranges[k - 1][1] - ranges[k - 1][0] == target.shape[k - 1]:
        k -= 1
    run_axes = max(k - 1, 0)  # axes before run_axes are iterated; the rest is one contiguous run
    if target.has_p:
        run_axes = max(run_axes, 1)
    outer = [range(n) for n in lead[:run_axes]]
    for idx in itertools.product(*outer):
        sub = out[idx] if idx else out
        sub_ranges = tuple((ranges[i][0] + j, ranges[i][0] + j + 1) for i, j in enumerate(idx)) + ranges[len(idx):]
        target.write_block([slice(a, b) for a, b in sub_ranges],
                           sub.reshape(tuple(b - a for a, b in sub_ranges) + out.shape[-2:]))
