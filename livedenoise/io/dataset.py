"""An opened dataset: metadata, named axes and lazy planes (:class:`ImageDataset`), and how to re-open it."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.io.planes import PlaneArray


@dataclass(frozen=True)
class SourceSpec:
    """How to open an input again anywhere (a dask worker): small and picklable."""

    path: str
    kind: str  # "tiff" | "ndtiff" | "ome-zarr" | "vendor" (ND2 / CZI / LIF through bioio)
    axes: str | None = None  # the user's --axes, if any


@dataclass
class ImageDataset:
    """An opened input: lazy pixels plus axes and metadata; nothing but metadata has been read."""

    spec: SourceSpec
    format: str  # "tiff", "ome-tiff", "imagej-tiff", "ndtiff", "ome-zarr", "nd2", "czi", "lif"
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    reader: PlaneArray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.spec.path)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (self.shape[-2], self.shape[-1])

    @property
    def n_frames(self) -> int:
        return int(np.prod(self.shape[:-2], dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def size(self, letter: str) -> int:
        """Length of axis ``letter`` (1 when the dataset has no such axis)."""
        return self.shape[self.axes.index(letter)] if letter in self.axes else 1

    @property
    def data(self) -> Any:
        """The whole dataset as a lazy dask array, one plane per chunk."""
        return self.to_dask((*tuple((1,) * s for s in self.shape[:-2]), (self.shape[-2],), (self.shape[-1],)))

    def to_dask(self, chunks: Any) -> Any:
        """A lazy dask array with the given chunks (reading happens only when blocks are computed)."""
        import dask.array as da

        name = "livedenoise-read-" + hashlib.sha1(repr((self.spec, self.shape, str(chunks))).encode()).hexdigest()[:16]
        return da.from_array(self.reader, chunks=chunks, name=name, asarray=True, fancy=False,
                             meta=np.empty((0,) * len(self.shape), dtype=self.dtype))

    def read_frame(self, index: Sequence[int]) -> np.ndarray:
        """One 2-D plane by its leading index."""
        return self.reader.planes.read(np.asarray([index], dtype=np.int64))[0]

    def close(self) -> None:
        close = getattr(self.reader.planes, "close", None)
        if close:
            close()

    def describe(self) -> str:
        dims = " x ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape, strict=True))
        return f"{self.format}, axes {self.axes} ({dims}), {self.dtype}, {self.nbytes / 1e6:.1f} MB"

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this input for ``--resume``: structure plus a content sample (not a full hash).

        Hashing a 20 GB dataset would take minutes; sizes and the first and last MiB of every file
        (and the whole NDTiff index) catch a replaced, re-acquired, truncated or appended dataset.
        """
        files = _dataset_files(self)
        return {
            "path": str(self.path.resolve()),
            "format": self.format,
            "axes": self.axes,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "files": [_file_fingerprint(f, whole=f.name == "NDTiff.index") for f in files],
        }


def _dataset_files(ds: ImageDataset) -> list[Path]:
    if ds.spec.kind == "ndtiff":
        return sorted(p for p in ds.path.iterdir() if p.suffix.lower() == ".tif" or p.name == "NDTiff.index")
    if ds.spec.kind == "ome-zarr":  # the metadata of the groups and arrays (pixels: resume re-reads each block)
        return sorted(p for p in ds.path.rglob("*") if p.name in ("zarr.json", ".zarray", ".zattrs", ".zgroup"))
    return [ds.path]


def _file_fingerprint(path: Path, whole: bool = False, sample: int = 1 << 20) -> dict[str, Any]:
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if whole or size <= 2 * sample:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(sample))
            fh.seek(size - sample)
            h.update(fh.read(sample))
    return {"name": path.name, "size": size, "sha256_sample": h.hexdigest()}
