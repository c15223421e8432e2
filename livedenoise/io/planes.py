"""Lazy, plane-addressed pixel access: a small picklable array-like that re-opens its file in any process."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError, LivedenoiseError

log = logging.getLogger("livedenoise")


_TIFFFILE_CORRUPTION = ("invalid page offset", "invalid value offset", "raised", "truncat", "corrupt", "invalid tag")


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
        for k, n in zip(key[:-2], self.shape[:-2], strict=True):
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
            frames = np.empty((0, *self.shape[-2:]), dtype=self.dtype)
        else:
            frames = self.planes.read(grid)
        frames = frames[:, key[-2], key[-1]]
        out: np.ndarray = frames.reshape(tuple(counts) + frames.shape[1:])
        squeeze = tuple(i for i, k in enumerate(keep) if not k)
        return out.reshape(tuple(c for i, c in enumerate(out.shape) if i not in squeeze)) if squeeze else out


class _TiffLogCapture(logging.Handler):
    """Collects tifffile's warnings while a file is opened (it logs, not raises, broken page chains): only those of
    the thread that opens it, so a batch's other block threads cannot make a healthy file look corrupt."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


#: Threads capturing tifffile's log right now, and the logger's own ``propagate`` from before the first of them.
_CAPTURING = {"count": 0, "propagate": True}
_CAPTURE_LOCK = threading.Lock()


@contextlib.contextmanager
def _capture_tifffile_log() -> Iterator[_TiffLogCapture]:
    """While any thread opens a TIFF, tifffile's messages go to the capturing handlers only (``_open_tiff`` reports
    each once, as an error or a warning of livedenoise's); the logger's ``propagate`` is restored when the last
    capturing thread is done (a count, so threads that overlap cannot leave it switched off)."""
    logger = logging.getLogger("tifffile")
    handler = _TiffLogCapture()
    with _CAPTURE_LOCK:
        if _CAPTURING["count"] == 0:
            _CAPTURING["propagate"] = logger.propagate
            logger.propagate = False
        _CAPTURING["count"] += 1
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        with _CAPTURE_LOCK:
            logger.removeHandler(handler)
            _CAPTURING["count"] -= 1
            if _CAPTURING["count"] == 0:
                logger.propagate = bool(_CAPTURING["propagate"])


def _open_tiff(path: str) -> Any:
    """``tifffile.TiffFile(path)`` with one clear :class:`InputDataError` for unreadable files."""
    import tifffile

    try:
        with _capture_tifffile_log() as cap:
            tif = tifffile.TiffFile(path)
            _ = tif.series  # parse now: broken page chains are reported here
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found.") from None
    except IsADirectoryError:
        raise InputDataError(f"{path}: is a folder; expected a TIFF file.") from None
    except tifffile.TiffFileError as exc:
        if os.path.getsize(path) == 0:
            raise InputDataError(f"{path}: is empty (0 bytes); expected a TIFF image.") from None
        raise InputDataError(f"{path}: is not a TIFF file (its first bytes are no TIFF header: {exc}); "
                             "expected a TIFF image.") from None
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
        out = np.empty((grid.shape[0], *self.frame_shape), dtype=self.dtype)
        if self.multi:
            series_pos, inner = grid[:, 0], grid[:, 1:]
        else:
            series_pos, inner = np.zeros(grid.shape[0], dtype=np.int64), grid
        pages = (np.ravel_multi_index(tuple(inner.T), self.lead_shape) if self.lead_shape
                 else np.zeros(grid.shape[0], np.int64))
        with self._lock:
            tif = self._opened()
            for s in np.unique(series_pos):
                rows = np.flatnonzero(series_pos == s)
                try:
                    self._read_series(tif, int(s), pages[rows], out, rows)
                except LivedenoiseError:
                    raise
                except Exception as exc:
                    codec = re.search(r"requires the '([\w.-]+)' package", str(exc))
                    why = (f"its compression needs the {codec.group(1)!r} package: pip install {codec.group(1)}"
                           if codec else "the file may be truncated or corrupt")  # the file is fine, a codec missing
                    raise InputDataError(
                        f"{self.path}: cannot read image plane(s) {pages[rows][:4].tolist()} of series "
                        f"{self.series[int(s)]} ({exc.__class__.__name__}: {exc}); {why}."
                    ) from None
        return out

    def _read_series(self, tif: Any, s: int, pages: np.ndarray, out: np.ndarray, rows: np.ndarray) -> None:
        offset = self.offsets[s]
        if offset is None:
            data = tif.asarray(series=self.series[s], key=[int(p) for p in pages])
            out[rows] = np.asarray(data).reshape((len(pages), *self.frame_shape))
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
            block = np.frombuffer(raw, dtype=self.file_dtype).reshape((count, *self.frame_shape))
            out[rows[order[start:stop]]] = block
            start = stop




