"""Saved microscopy datasets as lazy arrays with named axes, and the writers of denoised copies.

Why this shape:

* **Lazy, plane-addressed readers.** A dataset may be many times larger than memory, so opening
  one reads only its metadata. Pixels are read plane by plane (a plane = one 2-D frame) through a
  small picklable array-like (:class:`PlaneArray`) that ``dask.array.from_array`` wraps with any
  chunking; a worker process re-opens the file itself instead of receiving pixel data.
* **Named axes, one letter each** (``P`` position, ``T`` time, ``C`` channel, ``Z`` focus,
  ``Y``/``X``, plus the other codes of :data:`AXES`), always ending in ``YX``, ``P`` first. The
  letters are what tifffile and OME use; NDTiff axis *names* (``position``, ``time``, ...) map to
  letters and are kept in ``metadata["axis_names"]`` so an NDTiff copy gets the same names back.
* **Outputs preallocated, then filled by positional writes.** :func:`create_ome_tiff` writes the
  complete OME-TIFF structure (every series, every IFD, the OME-XML with provenance) with no pixel
  data; the file is sparse, so this is instant. Blocks are then written with ``os.pwrite`` at
  their byte offsets. Unlike a memory map, positional writes keep no dirty pages mapped into the
  process (resident memory stays at one block) and are safe when several machines of a cluster
  write disjoint parts of one file on a shared file system. NDTiff (append-only, no random
  access) is assembled at the end from finished blocks kept as ``.npy`` files.
* **Corrupt or truncated files are refused when opened**, not discovered half-way: every series'
  pixel data must lie inside the file, and tifffile's complaints about broken page chains are
  errors.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from livedenoise.errors import InputDataError, LivedenoiseError
from livedenoise.io_omezarr import is_ome_zarr, open_ome_zarr

log = logging.getLogger("livedenoise")

#: Axis letters understood here, with their meaning (the tifffile / OME codes, plus P and K).
AXES: dict[str, str] = {
    "P": "position (stage position; one OME image series each)",
    "T": "time",
    "C": "channel",
    "Z": "focus (z)",
    "Y": "image rows",
    "X": "image columns",
    "I": "image index (an unspecified sequence)",
    "Q": "other",
    "R": "tile row",
    "K": "tile column",
    "A": "angle",
    "E": "wavelength (lambda)",
    "H": "lifetime / phase",
}
#: NDTiff (pycromanager / Micro-Manager) axis names and their letters.
NDTIFF_LETTERS: dict[str, str] = {"position": "P", "time": "T", "channel": "C", "z": "Z", "row": "R", "column": "K"}
#: Letters given to other NDTiff axis names, in order.
_SPARE_LETTERS = "QAEHI"
#: Axes tifffile's OME writer accepts inside one image series (besides Y, X).
_OME_SERIES_AXES = set("TZCQRAHE")
TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
#: ``Namespace`` of the OME MapAnnotation that holds livedenoise provenance.
PROVENANCE_NAMESPACE = "livedenoise/provenance/1"
PROVENANCE_ID = "Annotation:livedenoise.provenance"
_TIFFFILE_CORRUPTION = ("invalid page offset", "invalid value offset", "raised", "truncat", "corrupt", "invalid tag")


# ---------------------------------------------------------------------------------------------
# axes
# ---------------------------------------------------------------------------------------------
def validate_axes(axes: str, ndim: int | None = None, *, what: str = "--axes") -> str:
    """Return ``axes`` upper-cased if it is a valid axis string, else raise :class:`InputDataError`.

    Valid: letters from :data:`AXES`, each at most once, ending in ``YX``, ``P`` (if any) first,
    and exactly ``ndim`` letters when ``ndim`` is given.
    """
    text = str(axes).strip().upper()
    allowed = ", ".join(f"{k} ({v})" for k, v in AXES.items())
    unknown = sorted({a for a in text if a not in AXES})
    if unknown:
        raise InputDataError(f"{what} {axes!r} contains unknown axis letter(s) {', '.join(unknown)}; expected letters among {allowed}.")
    if len(set(text)) != len(text):
        raise InputDataError(f"{what} {axes!r} names an axis twice; each letter may appear once.")
    if not text.endswith("YX"):
        raise InputDataError(f"{what} {axes!r} must end with YX (the image rows and columns), e.g. TZCYX.")
    if "P" in text and not text.startswith("P"):
        raise InputDataError(f"{what} {axes!r} must have P (position) first, e.g. PTCYX.")
    if ndim is not None and len(text) != ndim:
        raise InputDataError(f"{what} {axes!r} names {len(text)} axes but the data have {ndim} dimensions.")
    return text


# ---------------------------------------------------------------------------------------------
# lazy plane access
# ---------------------------------------------------------------------------------------------
class PlaneArray:
    """A lazy N-d array (``shape``, ``dtype``, ``ndim``, ``__getitem__``) over a stack of 2-D planes.

    ``planes.read(grid)`` returns the planes at the leading indices ``grid`` (an ``(n, ndim-2)``
    integer array) as an ``(n, Y, X)`` array; only the requested planes are read. Picklable: the
    plane source re-opens its file in whichever process unpickles it.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, planes: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.planes = planes

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-d array")
        lead_idx: list[np.ndarray] = []
        keep: list[bool] = []
        for k, n in zip(key[:-2], self.shape[:-2]):
            if isinstance(k, slice):
                lead_idx.append(np.arange(n)[k])
                keep.append(True)
            elif isinstance(k, (int, np.integer)):
                i = int(k) + n if int(k) < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for an axis of size {n}")
                lead_idx.append(np.array([i]))
                keep.append(False)
            else:
                lead_idx.append(np.arange(n)[np.asarray(k)].ravel())
                keep.append(True)
        counts = [len(a) for a in lead_idx]
        if lead_idx:
            grid = np.stack(np.meshgrid(*lead_idx, indexing="ij"), axis=-1).reshape(-1, len(lead_idx))
        else:
            grid = np.zeros((1, 0), dtype=np.int64)
        if grid.shape[0] == 0:
            frames = np.empty((0,) + self.shape[-2:], dtype=self.dtype)
        else:
            frames = self.planes.read(grid)
        frames = frames[:, key[-2], key[-1]]
        out = frames.reshape(tuple(counts) + frames.shape[1:])
        squeeze = tuple(i for i, k in enumerate(keep) if not k)
        return out.reshape(tuple(c for i, c in enumerate(out.shape) if i not in squeeze)) if squeeze else out


class _TiffLogCapture(logging.Handler):
    """Collects tifffile's warnings while a file is opened (it logs, not raises, broken page chains)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _capture_tifffile_log() -> Iterator[_TiffLogCapture]:
    logger = logging.getLogger("tifffile")
    handler = _TiffLogCapture()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _open_tiff(path: str) -> Any:
    """``tifffile.TiffFile(path)`` with one clear :class:`InputDataError` for unreadable files."""
    import tifffile

    try:
        with _capture_tifffile_log() as cap:
            tif = tifffile.TiffFile(path)
            _ = tif.series  # parse now: broken page chains are reported here
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found.") from None
    except Exception as exc:
        raise InputDataError(f"{path}: not a readable TIFF file ({exc.__class__.__name__}: {exc}).") from None
    bad = [m for m in cap.messages if any(s in m.lower() for s in _TIFFFILE_CORRUPTION)]
    if bad:
        tif.close()
        raise InputDataError(f"{path}: the TIFF structure is corrupt or the file is truncated ({bad[0]}).")
    for m in cap.messages:
        log.warning("%s: %s", path, m)
    return tif


def read_tiff(path: str | os.PathLike[str], *, grey: bool = False) -> np.ndarray:
    """The whole pixel array of a TIFF, with one clear :class:`InputDataError` for missing, corrupt or truncated files.

    ``grey``: refuse colour (RGB, multi-sample) images, which would otherwise be read as frames 3 pixels
    wide (a "3x32 px" camera calibration from 32x32 RGB images). Planar samples (``SYX``: tifffile's way of
    saving 3 or 4 grey frames) are read as frames.
    """
    tif = _open_tiff(str(path))
    try:
        if grey and tif.series and tif.series[0].axes.endswith("S"):
            # interleaved samples (Y, X, 3) are colour pixels; planar ones (3, Y, X) are what tifffile writes for a
            # stack of 3 or 4 grey frames, and are read as frames
            raise InputDataError(f"{path}: holds colour (RGB or multi-sample) images, axes {tif.series[0].axes!r}; "
                                 "expected grey-level camera frames.")
        return tif.asarray()
    except InputDataError:
        raise
    except Exception as exc:
        raise InputDataError(f"{path}: pixel data cannot be read ({exc.__class__.__name__}: {exc}).") from None
    finally:
        tif.close()


class _ReopeningReader:
    """Base of the plane readers: picklable, and opens its file lazily in whichever process reads.

    Dask workers receive the reader without an open file handle and open the file themselves, so
    jobs stay small and nothing unpicklable crosses process boundaries.
    """

    path: str

    def _init_handle(self) -> None:
        self._handle: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _opened(self) -> Any:
        if self._handle is None:
            self._handle = self._open()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


class TiffPlanes(_ReopeningReader):
    """Reads 2-D planes of one TIFF file; the leading index is ``(p, *series_index)`` or ``series_index``.

    Contiguous uncompressed series (the common case, and every file livedenoise writes) are read
    with one ``seek`` + ``read`` per run of consecutive planes; anything else goes through
    tifffile page by page.
    """

    def __init__(self, path: str, series: Sequence[int], lead_shape: tuple[int, ...], frame_shape: tuple[int, int],
                 dtype: np.dtype, offsets: Sequence[int | None], file_dtype: str, multi: bool) -> None:
        self.path = path
        self.series = tuple(series)
        self.lead_shape = tuple(lead_shape)  # per-series leading shape (without P)
        self.frame_shape = tuple(frame_shape)
        self.dtype = np.dtype(dtype)
        self.offsets = tuple(offsets)
        self.file_dtype = file_dtype  # dtype string with the file's byte order
        self.multi = multi
        self._init_handle()

    def _open(self) -> Any:
        return _open_tiff(self.path)

    def read(self, grid: np.ndarray) -> np.ndarray:
        out = np.empty((grid.shape[0],) + self.frame_shape, dtype=self.dtype)
        if self.multi:
            series_pos, inner = grid[:, 0], grid[:, 1:]
        else:
            series_pos, inner = np.zeros(grid.shape[0], dtype=np.int64), grid
        pages = np.ravel_multi_index(tuple(inner.T), self.lead_shape) if self.lead_shape else np.zeros(grid.shape[0], np.int64)
        with self._lock:
            tif = self._opened()
            for s in np.unique(series_pos):
                rows = np.flatnonzero(series_pos == s)
                try:
                    self._read_series(tif, int(s), pages[rows], out, rows)
                except LivedenoiseError:
                    raise
                except Exception as exc:
                    raise InputDataError(
                        f"{self.path}: cannot read image plane(s) {pages[rows][:4].tolist()} of series {self.series[int(s)]} "
                        f"({exc.__class__.__name__}: {exc}); the file may be truncated or corrupt."
                    ) from None
        return out

    def _read_series(self, tif: Any, s: int, pages: np.ndarray, out: np.ndarray, rows: np.ndarray) -> None:
        offset = self.offsets[s]
        if offset is None:
            data = tif.asarray(series=self.series[s], key=[int(p) for p in pages])
            out[rows] = np.asarray(data).reshape((len(pages),) + self.frame_shape)
            return
        plane_bytes = int(np.prod(self.frame_shape)) * np.dtype(self.file_dtype).itemsize
        fh = tif.filehandle
        order = np.argsort(pages, kind="stable")
        sorted_pages = pages[order]
        start = 0
        while start < len(sorted_pages):  # runs of consecutive planes -> one read each
            stop = start + 1
            while stop < len(sorted_pages) and sorted_pages[stop] == sorted_pages[stop - 1] + 1:
                stop += 1
            first, count = int(sorted_pages[start]), stop - start
            fh.seek(offset + first * plane_bytes)
            raw = fh.read(count * plane_bytes)
            if len(raw) != count * plane_bytes:
                raise InputDataError(f"{self.path}: pixel data end early (file truncated at plane {first}).")
            block = np.frombuffer(raw, dtype=self.file_dtype).reshape((count,) + self.frame_shape)
            out[rows[order[start:stop]]] = block
            start = stop


class NDTiffPlanes(_ReopeningReader):
    """Reads 2-D planes of an NDTiff dataset through ndstorage; missing images read as zeros."""

    def __init__(self, path: str, names: Sequence[str], values: Sequence[Sequence[Any]],
                 frame_shape: tuple[int, int], dtype: np.dtype) -> None:
        self.path = path
        self.names = tuple(names)
        self.values = tuple(tuple(v) for v in values)
        self.frame_shape = tuple(frame_shape)
        self.dtype = np.dtype(dtype)
        self._init_handle()

    def _open(self) -> Any:
        return _open_ndstorage(self.path)

    def coords(self, index: Sequence[int]) -> dict[str, Any]:
        """NDTiff coordinates (axis name -> value) of one leading index."""
        return {name: vals[int(i)] for name, vals, i in zip(self.names, self.values, index)}

    def read(self, grid: np.ndarray) -> np.ndarray:
        out = np.zeros((grid.shape[0],) + self.frame_shape, dtype=self.dtype)
        with self._lock:
            ds = self._opened()
            for row, index in enumerate(grid):
                coords = self.coords(index)
                try:
                    if ds.has_image(**coords):
                        out[row] = ds.read_image(**coords)
                except Exception as exc:
                    raise InputDataError(
                        f"{self.path}: cannot read the image at {coords} ({exc.__class__.__name__}: {exc}); "
                        "the dataset may be truncated or corrupt."
                    ) from None
        return out

    def read_metadata(self, index: Sequence[int]) -> dict[str, Any] | None:
        """Per-image metadata of one leading index (``None`` when the image is missing)."""
        coords = self.coords(index)
        with self._lock:
            ds = self._opened()
            if not ds.has_image(**coords):
                return None
            try:
                return dict(ds.read_metadata(**coords) or {})
            except Exception as exc:
                raise InputDataError(f"{self.path}: cannot read the metadata of image {coords} ({exc}).") from None


def _open_ndstorage(path: str) -> Any:
    """Open an NDTiff dataset read-only (the shared helper of :mod:`livedenoise.io_ndtiff`)."""
    from livedenoise.io_ndtiff import open_ndtiff

    return open_ndtiff(path)


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    """How to open an input again anywhere (a dask worker): small and picklable."""

    path: str
    kind: str  # "tiff" | "ndtiff"
    axes: str | None = None  # the user's --axes, if any


@dataclass
class ImageDataset:
    """An opened input: lazy pixels plus axes and metadata; nothing but metadata has been read."""

    spec: SourceSpec
    format: str  # "tiff", "ome-tiff", "imagej-tiff", "ndtiff"
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
        return self.to_dask(tuple((1,) * s for s in self.shape[:-2]) + ((self.shape[-2],), (self.shape[-1],)))

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
        dims = " x ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape))
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


def is_ndtiff_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "NDTiff.index").is_file()


def open_dataset(path: str | os.PathLike[str], axes: str | None = None) -> ImageDataset:
    """Open a TIFF / OME-TIFF file, an NDTiff dataset folder or an OME-Zarr lazily (metadata only).

    ``axes`` declares (or overrides) the axis letters of a TIFF's image series, e.g. ``"TZCYX"``
    for a plain multi-page file written as a hyperstack; it must name every dimension.
    """
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"{p}: no such file or folder.")
    if p.is_dir() and is_ome_zarr(p):
        if axes is not None:
            raise InputDataError(f"{p}: --axes applies to TIFF files; OME-Zarr images declare their own axes.")
        return open_ome_zarr(p)
    if p.is_dir():
        if not is_ndtiff_dataset(p):
            raise InputDataError(f"{p}: a folder that is neither an NDTiff dataset (no NDTiff.index) nor an OME-Zarr; "
                                 "pass its TIFF files or the folder to `livedenoise denoise` to process them one by one.")
        if axes is not None:
            raise InputDataError(f"{p}: --axes applies to TIFF files; NDTiff datasets declare their own axes.")
        return _open_ndtiff(p)
    return _open_tiff_dataset(p, axes)


def _open_tiff_dataset(path: Path, axes: str | None) -> ImageDataset:
    tif = _open_tiff(str(path))
    try:
        return _describe_tiff(path, tif, axes)
    finally:
        tif.close()


def _describe_tiff(path: Path, tif: Any, axes_override: str | None) -> ImageDataset:
    all_series = list(tif.series)
    if not all_series:
        raise InputDataError(f"{path}: the TIFF file contains no images.")
    first = all_series[0]
    same = [s for s in all_series if s.shape == first.shape and s.dtype == first.dtype and s.axes == first.axes]
    if len(same) != len(all_series):
        raise InputDataError(
            f"{path}: holds {len(all_series)} image series of different shapes "
            f"({', '.join(str(s.shape) for s in all_series[:3])}); expected positions of identical shape."
        )
    series_axes = first.axes
    lead_shape = tuple(first.shape[:-2])
    dtype = np.dtype(first.dtype)
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise InputDataError(f"{path}: pixel type {dtype} is not supported; expected integer or floating-point grey values.")
    if not series_axes.endswith("YX"):
        raise InputDataError(
            f"{path}: image series has axes {series_axes!r} (shape {first.shape}); expected grey-level planes ending "
            "in YX (RGB / multi-sample pixels are not supported)."
        )
    ome_xml = tif.ome_metadata if tif.is_ome else None
    provenance = read_provenance_xml(ome_xml) if ome_xml else None
    multi = len(all_series) > 1
    n_pages = int(np.prod(lead_shape, dtype=np.int64))
    if axes_override is not None:
        want = validate_axes(axes_override)
        series_want = want[1:] if (multi and want.startswith("P")) else want
        if multi and "P" in series_want:
            raise InputDataError(f"--axes {axes_override!r}: {path} stores positions as separate series; P must come first.")
        if len(series_want) != len(first.shape):
            raise InputDataError(
                f"--axes {axes_override!r} names {len(want)} axes but {path} has shape "
                f"{((len(all_series),) if multi else ()) + tuple(first.shape)} (axes {('P' if multi else '') + series_axes})."
            )
        series_axes = series_want
    elif provenance and provenance.get("axes"):
        # a file written by livedenoise: restore the exact axes it was given (OME has no 'I' / P)
        want = str(provenance["axes"])
        shape = tuple(int(s) for s in provenance.get("shape", ()))
        if multi and want.startswith("P"):
            want, shape = want[1:], shape[1:]
        if shape and int(np.prod(shape[:-2], dtype=np.int64)) == n_pages and shape[-2:] == tuple(first.shape[-2:]):
            series_axes, lead_shape = want, shape[:-2]
    series_axes = _normalise_tiff_axes(series_axes, path)
    axes = ("P" if multi else "") + series_axes
    validate_axes(axes, what=f"{path}: axes")
    shape = ((len(all_series),) if multi else ()) + lead_shape + tuple(first.shape[-2:])
    offsets: list[int | None] = []
    size = path.stat().st_size
    for s in all_series:
        offsets.append(_check_series_data(path, s, size))
    if "S" in first.axes[:-2] and None in offsets:
        raise InputDataError(f"{path}: grey frames stored as compressed colour samples cannot be read plane by plane; "
                             "re-save them as a grey-level stack.")
    frame_shape = tuple(first.shape[-2:])
    file_dtype = np.dtype(first.dtype).newbyteorder(tif.byteorder).str
    planes = TiffPlanes(str(path), [all_series.index(s) for s in all_series], lead_shape, frame_shape, dtype,
                        offsets, file_dtype, multi)
    fmt = "ome-tiff" if tif.is_ome else ("imagej-tiff" if tif.is_imagej else "tiff")
    metadata = _tiff_metadata(tif, all_series, axes, shape)
    if provenance:
        metadata["provenance"] = provenance
    return ImageDataset(SourceSpec(str(path), "tiff", axes_override), fmt, axes, shape, dtype,
                        PlaneArray(shape, dtype, planes), metadata)


def _normalise_tiff_axes(axes: str, path: Path) -> str:
    """tifffile's generic codes -> ours: 'S' (samples) refused, 'O'/'V'/... -> 'Q'."""
    if "S" in axes:
        raise InputDataError(
            f"{path}: is stored as colour / multi-sample images (axes {axes!r}); expected grey-level images. If these "
            "are grey frames saved as RGB (tifffile does this for 3 or 4 frames), declare their axes, e.g. --axes TYX."
        )
    # tifffile names every unknown dimension 'Q' (e.g. 'QQYX'): give repeats and unknown codes free letters
    spare = [c for c in dict.fromkeys("QI" + _SPARE_LETTERS) if c not in axes]
    out: list[str] = []
    for a in axes:
        if a not in AXES or a in out:
            if not spare:
                raise InputDataError(f"{path}: axes {axes!r} cannot be mapped to distinct axis letters; declare them with --axes.")
            a = spare.pop(0)
        out.append(a)
    result = "".join(out)
    if len(set(result)) != len(result):
        raise InputDataError(f"{path}: axes {axes!r} cannot be mapped to distinct axis letters; declare them with --axes.")
    return result


def _check_series_data(path: Path, series: Any, size: int) -> int | None:
    """Data offset of a contiguous series, after checking that every pixel lies inside the file."""
    nbytes = int(np.prod(series.shape, dtype=np.int64)) * np.dtype(series.dtype).itemsize
    offset = series.dataoffset
    if offset is not None:
        if offset + nbytes > size:
            raise InputDataError(
                f"{path}: truncated: its pixel data need {offset + nbytes} bytes but the file has {size}."
            )
        return int(offset)
    pages = [p for p in series.pages]
    if any(p is None for p in pages):
        raise InputDataError(f"{path}: some image planes are missing from the TIFF structure (truncated or corrupt file).")
    for page in pages:
        offs, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
        if any(o + c > size for o, c in zip(offs, counts)):
            raise InputDataError(f"{path}: truncated: image data of page {page.index} lie beyond the end of the file.")
    return None


def _tiff_metadata(tif: Any, series: list[Any], axes: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """Metadata to carry over: the OME-XML itself, or ImageJ / resolution facts mapped to OME terms."""
    meta: dict[str, Any] = {"series_names": [s.name or f"Pos{i}" for i, s in enumerate(series)]}
    page = tif.pages[0]
    if tif.is_ome:
        meta["ome_xml"] = tif.ome_metadata
        return meta
    try:
        res = page.resolution
        unit = int(page.resolutionunit)
    except Exception:  # pragma: no cover - unusual tags
        res, unit = None, 1
    if res and all(r > 0 for r in res):
        meta["resolution"] = (float(res[0]), float(res[1]), unit)
    physical: dict[str, tuple[float, str]] = {}
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij:
        meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (str, int, float, bool))}
        ij_unit = str(ij.get("unit", "")).replace("\\u00B5", "µ").replace("micron", "µm") or None
        if res and ij_unit:
            physical["X"] = (1.0 / res[0], ij_unit)
            physical["Y"] = (1.0 / res[1], ij_unit)
        if ij.get("spacing") and ij_unit:
            physical["Z"] = (float(ij["spacing"]), ij_unit)
        if ij.get("finterval"):
            meta["time_increment"] = (float(ij["finterval"]), "s")
        labels = ij.get("Labels")
        if isinstance(labels, (list, tuple)) and "C" in axes and len(labels) == shape[axes.index("C")]:
            meta["channel_names"] = [str(x) for x in labels]
    elif res and unit in (2, 3):
        per_um = {2: 25400.0, 3: 10000.0}[unit]
        physical["X"] = (per_um / res[0], "µm")
        physical["Y"] = (per_um / res[1], "µm")
    if physical:
        meta["physical_size"] = physical
    desc = page.description
    if desc and not tif.is_imagej:
        meta["description"] = desc[:10000]
    if tif.is_shaped:
        meta["shaped"] = True
    return meta


def _open_ndtiff(path: Path) -> ImageDataset:
    ds = _open_ndstorage(str(path))
    try:
        if ds.image_height is None or ds.dtype is None:
            raise InputDataError(f"{path}: the NDTiff dataset holds no images.")
        if getattr(ds, "bytes_per_pixel", 2) == 3:
            raise InputDataError(f"{path}: holds RGB images; expected grey-level images.")
        from livedenoise.io_ndtiff import dataset_axes

        axis_values = dataset_axes(ds)
        names = list(axis_values)
        # P first (it becomes OME image series), then ndstorage's own order (time, channel, z, ...)
        names.sort(key=lambda n: 0 if n == "position" else 1)
        letters: dict[str, str] = {}
        spare = iter(c for c in _SPARE_LETTERS)
        for n in names:
            letter = NDTIFF_LETTERS.get(n)
            if letter is None or letter in letters.values():
                letter = next((c for c in spare if c not in letters.values() and c not in NDTIFF_LETTERS.values()), None)
            if letter is None:
                raise InputDataError(f"{path}: has more custom axes than livedenoise can name ({', '.join(names)}).")
            letters[n] = letter
        values = [axis_values[n] for n in names]
        axes = "".join(letters[n] for n in names) + "YX"
        frame_shape = (int(ds.image_height), int(ds.image_width))
        dtype = np.dtype(ds.dtype)
        shape = tuple(len(v) for v in values) + frame_shape
        present = {frozenset(c.items()) for c in ds.get_image_coordinates_list()}
        summary = dict(ds.summary_metadata or {})
    finally:
        ds.close()
    expected = int(np.prod(shape[:-2], dtype=np.int64))
    metadata: dict[str, Any] = {
        "axis_names": {letters[n]: n for n in names},
        "axis_values": {letters[n]: v for n, v in zip(names, values)},
        "ndtiff_summary": summary,
        "missing_frames": max(0, expected - len(present)),
    }
    if "C" in axes:
        metadata["channel_names"] = [str(v) for v in metadata["axis_values"]["C"]]
    if "P" in axes:
        metadata["series_names"] = [f"Pos{v}" for v in metadata["axis_values"]["P"]]
    px = summary.get("PixelSize_um")
    if isinstance(px, (int, float)) and px > 0:
        metadata["physical_size"] = {"X": (float(px), "µm"), "Y": (float(px), "µm")}
    if metadata["missing_frames"]:
        log.warning("%s: %d of %d images are missing (an interrupted acquisition?); they read as zeros.",
                    path, metadata["missing_frames"], expected)
    planes = NDTiffPlanes(str(path), names, values, frame_shape, dtype)
    provenance = summary.get("livedenoise") if isinstance(summary.get("livedenoise"), dict) else None
    if provenance:
        metadata["provenance"] = provenance
    return ImageDataset(SourceSpec(str(path), "ndtiff", None), "ndtiff", axes, shape, dtype,
                        PlaneArray(shape, dtype, planes), metadata)


# ---------------------------------------------------------------------------------------------
# input expansion and output names
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputItem:
    """One dataset to process and where its output goes, relative to the output folder."""

    path: Path
    output_stem: str  # e.g. "cells" or "folder/cells"


def output_stem(path: Path) -> str:
    name = path.name
    for suffix in (*TIFF_SUFFIXES, ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[InputItem]:
    """Files stay files, NDTiff folders stay datasets, other folders expand to their TIFFs / NDTiff datasets."""
    items: list[InputItem] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputDataError(f"{p}: no such file or folder.")
        if p.is_file() or is_ndtiff_dataset(p) or is_ome_zarr(p):
            items.append(InputItem(p, output_stem(p)))
            continue
        if not p.is_dir():
            raise InputDataError(f"{p}: not a regular file or folder (a device, pipe or socket); expected TIFF / OME-TIFF "
                                 "files, folders of TIFFs, NDTiff datasets or OME-Zarr images.")
        children = sorted(p.iterdir(), key=lambda c: _natural_key(c.name))
        found = [c for c in children if (c.is_file() and c.name.lower().endswith(TIFF_SUFFIXES) and not c.name.startswith("."))
                 or is_ndtiff_dataset(c) or is_ome_zarr(c)]
        if not found:
            raise InputDataError(f"{p}: folder holds no TIFF files (.tif, .tiff, .ome.tif), no NDTiff datasets and no "
                                 "OME-Zarr images.")
        items.extend(InputItem(c, f"{p.name}/{output_stem(c)}") for c in found)
    if not items:
        raise InputDataError("No input given; expected TIFF / OME-TIFF files, folders of TIFFs, NDTiff datasets or "
                             "OME-Zarr images.")
    return items


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------------------------
# provenance in OME-XML
# ---------------------------------------------------------------------------------------------
def _ns(tag: str) -> str:
    return tag[1:].split("}")[0] if tag.startswith("{") else ""


def read_provenance_xml(xml: str | None) -> dict[str, Any] | None:
    """The livedenoise provenance stored in an OME-XML document, or ``None``."""
    if not xml:
        return None
    try:
        root = ET.fromstring(xml.encode("utf-8") if isinstance(xml, str) else xml)
    except ET.ParseError:
        return None
    for ann in root.iter():
        if ann.tag.endswith("MapAnnotation") and ann.get("Namespace") == PROVENANCE_NAMESPACE:
            for m in ann.iter():
                if m.tag.endswith("}M") or m.tag == "M":
                    if m.get("K") == "provenance_json" and m.text:
                        try:
                            return json.loads(m.text)
                        except json.JSONDecodeError:
                            return None
    return None


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Provenance of a livedenoise output (OME-TIFF file or NDTiff folder), or ``None``."""
    p = Path(path)
    if is_ndtiff_dataset(p):
        ds = _open_ndstorage(str(p))
        try:
            prov = (ds.summary_metadata or {}).get("livedenoise")
        finally:
            ds.close()
        return prov if isinstance(prov, dict) else None
    import tifffile

    with tifffile.TiffFile(p) as tif:
        return read_provenance_xml(tif.ome_metadata) if tif.is_ome else None


def _provenance_items(prov: dict[str, Any]) -> list[tuple[str, str]]:
    model = prov.get("model") or {}
    models = model if isinstance(model, list) else [model]
    items = [
        ("software", "livedenoise"),
        ("livedenoise_version", str(prov.get("livedenoise_version", ""))),
        ("date", str(prov.get("date", ""))),
        ("model_name", "; ".join(str(m.get("name", "")) for m in models)),
        ("model_path", "; ".join(str(m.get("path", "")) for m in models)),
        ("model_sha256", "; ".join(str(m.get("sha256", "")) for m in models)),
        ("normalizer", json.dumps([m.get("normalizer") for m in models] if len(models) > 1 else models[0].get("normalizer"))),
        ("source", str((prov.get("input") or {}).get("path", ""))),
        ("axes", str(prov.get("axes", ""))),
        ("output_dtype", str(prov.get("output_dtype", ""))),
        ("provenance_json", json.dumps(prov, default=str)),
    ]
    return items


def ome_xml_with_provenance(written_xml: str, template_xml: str | None, provenance: dict[str, Any]) -> str:
    """The OME-XML to store: the input's own OME-XML (when it had one) adapted to the new pixels, plus provenance.

    From ``written_xml`` (what tifffile wrote for the output) come the pixel type, dimension order,
    sizes, TiffData blocks and UUID; everything else (instrument, channels, planes, annotations, ...)
    comes from ``template_xml``. A previous livedenoise provenance annotation is replaced (its
    content is kept under ``previous`` in the new one).
    """
    written = ET.fromstring(written_xml.encode("utf-8"))
    root = written
    ns = _ns(written.tag)
    if template_xml:
        try:
            template = ET.fromstring(template_xml.encode("utf-8") if isinstance(template_xml, str) else template_xml)
        except ET.ParseError:
            template = None
        if template is not None and _ns(template.tag) == ns:
            t_images = template.findall(f"{{{ns}}}Image")
            w_images = written.findall(f"{{{ns}}}Image")
            if len(t_images) == len(w_images):
                for t_img, w_img in zip(t_images, w_images):
                    _adapt_pixels(t_img.find(f"{{{ns}}}Pixels"), w_img.find(f"{{{ns}}}Pixels"), ns)
                for key in ("UUID", "Creator"):
                    if written.get(key):
                        template.set(key, written.get(key))
                root = template
            else:
                log.info("OME-XML of the input has %d images, the output %d: writing fresh OME-XML.",
                         len(t_images), len(w_images))
    _set_provenance(root, ns, provenance)
    from livedenoise import __version__

    root.set("Creator", f"livedenoise {__version__}")
    ET.register_namespace("", ns)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def _adapt_pixels(t_pix: ET.Element | None, w_pix: ET.Element | None, ns: str) -> None:
    if t_pix is None or w_pix is None:
        return
    for attr in ("BigEndian", "Interleaved", "SignificantBits"):
        t_pix.attrib.pop(attr, None)
    for attr in ("Type", "DimensionOrder", "SizeX", "SizeY", "SizeZ", "SizeC", "SizeT", "BigEndian", "Interleaved"):
        if w_pix.get(attr) is not None:
            t_pix.set(attr, w_pix.get(attr))
    for child in list(t_pix):
        if child.tag in (f"{{{ns}}}TiffData", f"{{{ns}}}BinData", f"{{{ns}}}MetadataOnly"):
            t_pix.remove(child)
    children = list(t_pix)
    insert_at = max([i + 1 for i, c in enumerate(children) if c.tag == f"{{{ns}}}Channel"], default=0)
    for k, td in enumerate(w_pix.findall(f"{{{ns}}}TiffData")):
        t_pix.insert(insert_at + k, td)


def _set_provenance(root: ET.Element, ns: str, provenance: dict[str, Any]) -> None:
    q = lambda tag: f"{{{ns}}}{tag}"  # noqa: E731
    previous = None
    sa = root.find(q("StructuredAnnotations"))
    if sa is not None:
        for ann in list(sa):
            if ann.tag == q("MapAnnotation") and ann.get("Namespace") == PROVENANCE_NAMESPACE:
                if previous is None:
                    previous = read_provenance_xml(ET.tostring(root, encoding="unicode"))
                sa.remove(ann)
                for img in root.findall(q("Image")):
                    for ref in img.findall(q("AnnotationRef")):
                        if ref.get("ID") == ann.get("ID"):
                            img.remove(ref)
    else:
        sa = ET.Element(q("StructuredAnnotations"))
        children = list(root)
        last_image = max([i for i, c in enumerate(children) if c.tag == q("Image")], default=len(children) - 1)
        root.insert(last_image + 1, sa)
    prov = dict(provenance)
    if previous is not None and "previous" not in prov:
        prov["previous"] = previous
    ann = ET.SubElement(sa, q("MapAnnotation"), {"ID": PROVENANCE_ID, "Namespace": PROVENANCE_NAMESPACE})
    value = ET.SubElement(ann, q("Value"))
    for k, v in _provenance_items(prov):
        m = ET.SubElement(value, q("M"), {"K": k})
        m.text = v
    for img in root.findall(q("Image")):
        ET.SubElement(img, q("AnnotationRef"), {"ID": PROVENANCE_ID})


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------
def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:done + (1 << 30)], offset + done)
        if n <= 0:  # pragma: no cover - disk full is raised as OSError by the kernel
            raise OSError("short write")
        done += n


@dataclass(frozen=True)
class OmeTiffTarget:
    """A preallocated OME-TIFF: where each position's pixels start, so blocks can be written in place."""

    path: str
    axes: str
    shape: tuple[int, ...]
    dtype: str
    offsets: tuple[int, ...]  # byte offset of each series' pixel data

    @property
    def has_p(self) -> bool:
        return self.axes.startswith("P")

    def write_block(self, lead_slices: Sequence[slice], data: np.ndarray) -> None:
        """Write ``data`` (the block at ``lead_slices`` of the leading axes; contiguous in one series) and fsync."""
        lead_slices = list(lead_slices)
        p = 0
        if self.has_p:
            p = lead_slices.pop(0).start or 0
        series_lead = self.shape[1:-2] if self.has_p else self.shape[:-2]
        starts = tuple((s.start or 0) for s in lead_slices)
        first = int(np.ravel_multi_index(starts, series_lead)) if series_lead else 0
        frame_bytes = self.shape[-1] * self.shape[-2] * np.dtype(self.dtype).itemsize
        arr = np.ascontiguousarray(data, dtype=np.dtype(self.dtype))
        fd = os.open(self.path, os.O_WRONLY)
        try:
            _pwrite_all(fd, arr, self.offsets[p] + first * frame_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)

    def check(self) -> None:
        """Raise if the file on disk no longer has the layout this target was created with (for --resume)."""
        import tifffile

        try:
            with tifffile.TiffFile(self.path) as tif:
                offsets = tuple(int(s.dataoffset) if s.dataoffset is not None else -1 for s in tif.series)
        except Exception as exc:
            raise LivedenoiseError(f"{self.path}: the partial output cannot be read ({exc}); start again with --overwrite.") from None
        if offsets != self.offsets:
            raise LivedenoiseError(f"{self.path}: the partial output does not match its resume record; start again with --overwrite.")


def _ome_series_axes(axes: str, lead_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """Axes/shape tifffile's OME writer accepts for one series (unsupported leading axes fold into Q)."""
    if all(a in _OME_SERIES_AXES for a in axes[:-2]):
        return axes, lead_shape
    return "QYX", (int(np.prod(lead_shape, dtype=np.int64)),)


def create_ome_tiff(path: str | os.PathLike[str], dataset: ImageDataset, dtype: np.dtype | str,
                    provenance: dict[str, Any]) -> OmeTiffTarget:
    """Create an OME-TIFF with ``dataset``'s axes, shape and metadata, pixel type ``dtype``, no pixels yet.

    P (positions) become separate OME image series. The file is sparse until written.
    """
    import tifffile
    from tifffile import OmeXmlError

    path = str(path)
    dtype = np.dtype(dtype)
    axes, shape, meta = dataset.axes, dataset.shape, dataset.metadata
    has_p = axes.startswith("P")
    n_series = shape[0] if has_p else 1
    s_axes = axes[1:] if has_p else axes
    s_shape = shape[1:] if has_p else shape
    ome_axes, ome_lead = _ome_series_axes(s_axes, tuple(s_shape[:-2]))
    ome_shape = ome_lead + tuple(s_shape[-2:])
    total = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    names = meta.get("series_names") or [f"Pos{i}" for i in range(n_series)]
    kwargs: dict[str, Any] = {"photometric": "minisblack"}
    res = meta.get("resolution")
    if res:
        kwargs["resolution"] = (res[0], res[1])
        kwargs["resolutionunit"] = res[2]
    image_meta: dict[str, Any] = {"axes": ome_axes}
    for ax, (value, unit) in (meta.get("physical_size") or {}).items():
        image_meta[f"PhysicalSize{ax}"] = value
        image_meta[f"PhysicalSize{ax}Unit"] = unit
    if meta.get("time_increment"):
        image_meta["TimeIncrement"], image_meta["TimeIncrementUnit"] = meta["time_increment"]
    chans = meta.get("channel_names")
    if chans and "C" in ome_axes and len(chans) == ome_shape[ome_axes.index("C")]:
        image_meta["Channel"] = {"Name": list(chans)}
    try:
        with tifffile.TiffWriter(path, bigtiff=total > 2**32 - 2**26, ome=True) as tw:
            for i in range(n_series):
                tw.write(shape=ome_shape, dtype=dtype, metadata={**image_meta, "Name": str(names[i] if i < len(names) else f"Pos{i}")},
                         **kwargs)
    except (OmeXmlError, ValueError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise InputDataError(f"{dataset.path}: cannot be stored as OME-TIFF with axes {axes} ({exc}); "
                             "try --format ndtiff or declare other --axes.") from None
    with tifffile.TiffFile(path) as tif:
        written_xml = tif.ome_metadata
        offsets = tuple(int(s.dataoffset) for s in tif.series)
    xml = ome_xml_with_provenance(written_xml, meta.get("ome_xml"), provenance)
    tifffile.tiffcomment(path, xml.encode("utf-8"))
    target = OmeTiffTarget(path, axes, tuple(shape), dtype.str, offsets)
    target.check()
    return target


def update_ome_provenance(path: str | os.PathLike[str], provenance: dict[str, Any]) -> None:
    """Replace the provenance annotation of a livedenoise OME-TIFF (e.g. to add final counts)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    root = ET.fromstring(xml.encode("utf-8"))
    ns = _ns(root.tag)
    sa = root.find(f"{{{ns}}}StructuredAnnotations")
    if sa is not None:
        for ann in list(sa):
            if ann.tag == f"{{{ns}}}MapAnnotation" and ann.get("Namespace") == PROVENANCE_NAMESPACE:
                sa.remove(ann)
        for img in root.findall(f"{{{ns}}}Image"):
            for ref in img.findall(f"{{{ns}}}AnnotationRef"):
                if ref.get("ID") == PROVENANCE_ID:
                    img.remove(ref)
    _set_provenance(root, ns, provenance)
    ET.register_namespace("", ns)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    tifffile.tiffcomment(path, ('<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")).encode("utf-8"))


@dataclass(frozen=True)
class NpyBlockTarget:
    """Finished blocks as ``.npy`` files (written atomically): the staging area of an NDTiff output."""

    folder: str
    dtype: str

    def block_path(self, index: int) -> Path:
        return Path(self.folder) / f"block-{index:07d}.npy"

    def write_block(self, index: int, data: np.ndarray) -> None:
        final = self.block_path(index)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(data, dtype=np.dtype(self.dtype)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)


def ndtiff_coordinates(dataset: ImageDataset) -> tuple[list[str], list[list[Any]]]:
    """NDTiff axis names and values for the leading axes of ``dataset`` (originals for NDTiff inputs)."""
    names_map = dataset.metadata.get("axis_names") or {}
    values_map = dataset.metadata.get("axis_values") or {}
    default = {v: k for k, v in NDTIFF_LETTERS.items()}
    names, values = [], []
    for i, a in enumerate(dataset.axes[:-2]):
        names.append(names_map.get(a) or default.get(a) or a.lower())
        if a in values_map:
            values.append(list(values_map[a]))
        elif a == "C" and dataset.metadata.get("channel_names"):
            values.append(list(dataset.metadata["channel_names"]))
        else:
            values.append(list(range(dataset.shape[i])))
    return names, values


def write_ndtiff(folder: str | os.PathLike[str], dataset: ImageDataset, frames: Iterator[tuple[tuple[int, ...], np.ndarray]],
                 provenance: dict[str, Any]) -> None:
    """Write an NDTiff dataset into ``folder`` (created) from ``(leading index, 2-D frame)`` pairs.

    Only images present in an NDTiff input are written (an interrupted acquisition stays sparse);
    per-image metadata of NDTiff inputs is copied, the summary metadata gains ``"livedenoise"``.
    """
    from ndstorage import NDTiffDataset

    folder = Path(folder)
    folder.mkdir(parents=True)
    names, values = ndtiff_coordinates(dataset)
    summary = dict(dataset.metadata.get("ndtiff_summary") or {})
    summary["livedenoise"] = provenance
    planes = dataset.reader.planes if isinstance(dataset.reader.planes, NDTiffPlanes) else None
    out = NDTiffDataset(str(folder), writable=True)
    out.initialize(json.loads(json.dumps(summary, default=str)))
    try:
        for index, frame in frames:
            coords = {n: (int(v[i]) if isinstance(v[i], (int, np.integer)) else v[i]) for n, v, i in zip(names, values, index)}
            if planes is not None:
                meta = planes.read_metadata(index)
                if meta is None:
                    continue
            else:
                meta = {"Width": int(frame.shape[1]), "Height": int(frame.shape[0]),
                        "PixelType": "GRAY8" if frame.dtype == np.uint8 else "GRAY16"}
            out.put_image(coords, np.ascontiguousarray(frame), meta)
    finally:
        out.finish()
        out.close()


def remove_path(path: str | os.PathLike[str]) -> None:
    """Delete a file or folder we created (missing is fine)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


__all__ = [
    "AXES", "ImageDataset", "InputItem", "NDTiffPlanes", "NpyBlockTarget", "OmeTiffTarget", "PlaneArray", "SourceSpec",
    "TiffPlanes", "create_ome_tiff", "expand_inputs", "is_ndtiff_dataset", "ndtiff_coordinates", "ome_xml_with_provenance",
    "open_dataset", "output_stem", "read_provenance", "read_provenance_xml", "remove_path", "update_ome_provenance",
    "validate_axes", "write_ndtiff",
]
