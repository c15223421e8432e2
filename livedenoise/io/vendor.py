"""Nikon ND2, Zeiss CZI and Leica LIF files, read through bioio (the optional ``[formats]`` extra).

Why bioio: one maintained reader per vendor format (``bioio-nd2``, ``bioio-czi``, ``bioio-lif``) behind one
API that presents every scene as ``TCZYX``, so livedenoise needs one adapter, not three parsers. The
plugins are heavy and optional; a file is still *recognised* by its first bytes without them, so a user
who passes an ``.nd2`` is told which extra to install instead of "not a TIFF".

Mapping: the ``T``, ``C`` and ``Z`` dimensions of size 1 are dropped; several scenes (stage positions,
wells, the images of a LIF project) become a leading ``P`` axis and must then share shape and pixel type;
colour (``S`` > 1) and non-grey pixel types are refused. Physical pixel sizes (µm), channel names, scene
names and the time step are kept under the metadata keys the TIFF reader uses, so writers carry them over.

The pixels are read lazily through :class:`VendorPlanes`, which re-opens the file in whichever process
(dask worker) reads, as the TIFF and NDTiff plane readers do.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError, LivedenoiseError
from livedenoise.io.axes import _SPARE_LETTERS, validate_axes
from livedenoise.io.dataset import ImageDataset, SourceSpec
from livedenoise.io.planes import PlaneArray, _ReopeningReader

#: First bytes of each format (what the vendors' own libraries check): a current ND2 chunk header, a legacy
#: (JPEG-2000 container) ND2, a CZI file header segment.
ND2_MAGIC = b"\xda\xce\xbe\x0a"
ND2_JP2_MAGIC = b"\x00\x00\x00\x0cjP  "
CZI_MAGIC = b"ZISRAWFILE"
#: A LIF starts with a uint32 0x70 block id and, after the uint32 block size, the byte 0x2A (liffile's check).
LIF_MAGIC = b"\x70\x00\x00\x00"
LIF_MARK_OFFSET, LIF_MARK = 8, 0x2A

#: format -> (what it is, in words; the bioio plugin module; its distribution name)
VENDOR_FORMATS: dict[str, tuple[str, str, str]] = {
    "nd2": ("a Nikon ND2 file", "bioio_nd2", "bioio-nd2"),
    "czi": ("a Zeiss CZI file", "bioio_czi", "bioio-czi"),
    "lif": ("a Leica LIF file", "bioio_lif", "bioio-lif"),
}
#: File name suffixes of these formats (for expanding folders; reading decides by content).
VENDOR_SUFFIXES = (".nd2", ".czi", ".lif")
INSTALL_HINT = "pip install 'livedenoise[formats]'"


def vendor_format(path: str | os.PathLike[str]) -> str | None:
    """``"nd2"``, ``"czi"`` or ``"lif"`` when the regular file ``path`` starts like one, else None (name ignored)."""
    p = Path(path)
    try:
        if not p.is_file():
            return None
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head.startswith(ND2_MAGIC) or head.startswith(ND2_JP2_MAGIC):
        return "nd2"
    if head.startswith(CZI_MAGIC):
        return "czi"
    if head.startswith(LIF_MAGIC) and len(head) > LIF_MARK_OFFSET and head[LIF_MARK_OFFSET] == LIF_MARK:
        return "lif"
    return None


def is_vendor_file(path: Path) -> bool:
    """True for an ND2, CZI or LIF file, recognised by its first bytes (bioio need not be installed)."""
    return vendor_format(path) is not None


def _what(fmt: str) -> str:
    return VENDOR_FORMATS[fmt][0]


def _plugin(path: Path, fmt: str) -> tuple[Any, Any, str]:
    """(``bioio.BioImage``, the plugin's ``Reader`` class, "plugin version"), or the extra to install."""
    _, module, dist = VENDOR_FORMATS[fmt]
    try:
        bioio = importlib.import_module("bioio")
        plugin = importlib.import_module(module)
        reader_cls = plugin.Reader
    except (ImportError, AttributeError) as exc:
        raise InputDataError(f"{path}: {_what(fmt)}; reading it needs the optional extra: {INSTALL_HINT} "
                             f"({exc.__class__.__name__}: {exc}).") from None
    try:
        from importlib.metadata import version

        label = f"{dist} {version(dist)}"
    except Exception:  # not installed as a distribution (a source checkout): the name alone
        label = dist
    return bioio.BioImage, reader_cls, label


class _DropBioioWarnings(logging.Filter):
    """bioio logs every failed reader attempt as a warning before raising; the raised error says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


@contextlib.contextmanager
def _quiet_bioio() -> Iterator[None]:
    logger = logging.getLogger("bioio.bio_image")
    quiet = _DropBioioWarnings()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _reason(exc: BaseException) -> str:
    """The useful part of a bioio error: its last line, without bioio's "... does not support the image: ..."."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    text = re.sub(r"^-\s*\w+:\s*", "", text)
    text = re.sub(r"^.*?does not support the image: '[^']*'\.?\s*", "", text)
    text = text[:300] or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"


def _broken(path: str, fmt: str, what_failed: str, exc: BaseException) -> InputDataError:
    """The one error for a file that has a vendor header but cannot be parsed."""
    note = ""
    if fmt == "nd2" and vendor_format(path) == "nd2":
        with contextlib.suppress(OSError), open(path, "rb") as fh:
            if fh.read(len(ND2_JP2_MAGIC)) == ND2_JP2_MAGIC:  # legacy ND2s are JPEG 2000 containers
                note = " (or it is a plain JPEG 2000 image, which livedenoise does not read)"
    return InputDataError(f"{path}: has the header of {_what(fmt)} but {what_failed} ({_reason(exc)}); the "
                          f"file may be truncated or corrupt{note}.")


def _open_image(path: str, fmt: str) -> Any:
    """A ``bioio.BioImage`` of ``path`` read by the plugin of ``fmt`` (and no other), or one clear error."""
    bio_image, reader_cls, _ = _plugin(Path(path), fmt)
    try:
        with _quiet_bioio():
            return bio_image(path, reader=reader_cls)
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found.") from None
    except Exception as exc:
        raise _broken(path, fmt, "cannot be read", exc) from None


def _scene_layout(image: Any, index: int) -> tuple[str, tuple[int, ...], np.dtype]:
    image.set_scene(index)
    dims = image.dims
    return str("".join(dims.order)), tuple(int(n) for n in dims.shape), np.dtype(image.dtype)


def open_vendor_dataset(path: str | os.PathLike[str]) -> ImageDataset:
    """An ND2, CZI or LIF file as an :class:`~livedenoise.io.ImageDataset` (metadata read, pixels lazy).

    Raises :class:`InputDataError` naming the file when bioio or its plugin is missing (with the extra to
    install), when the file cannot be parsed, and for layouts livedenoise cannot denoise (scenes of
    different shapes, colour images, unsupported pixel types).
    """
    p = Path(path)
    fmt = vendor_format(p)
    if fmt is None:
        raise InputDataError(f"{p}: not a Nikon ND2, Zeiss CZI or Leica LIF file (judged by its first bytes).")
    _, _, label = _plugin(p, fmt)
    image = _open_image(str(p), fmt)
    try:
        return _describe(p, fmt, image, label)
    except LivedenoiseError:
        raise
    except Exception as exc:  # bioio parses lazily: dims and metadata of a corrupt file fail here
        raise _broken(str(p), fmt, "its structure cannot be read", exc) from None


def _describe(p: Path, fmt: str, image: Any, label: str) -> ImageDataset:
    scenes = [str(s) for s in image.scenes]
    if not scenes:
        raise InputDataError(f"{p}: {_what(fmt)} without images (no scenes).")
    layouts = [_scene_layout(image, i) for i in range(len(scenes))]
    order, scene_shape, dtype = layouts[0]
    if any(lay != layouts[0] for lay in layouts):
        shown = ", ".join(f"{s} {dict(zip(o, n, strict=True))} {d}" for s, (o, n, d) in zip(scenes, layouts[:3],
                                                                                             strict=False))
        raise InputDataError(
            f"{p}: holds {len(scenes)} scenes of different shapes or pixel types ({shown}); expected positions of "
            "identical shape. Save the scenes as separate files to denoise them.")
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise InputDataError(
            f"{p}: pixel type {dtype} is not supported; expected integer or floating-point grey values.")
    sizes = dict(zip(order, scene_shape, strict=True))
    if sizes.get("S", 1) > 1:
        raise InputDataError(
            f"{p}: holds colour (RGB / multi-sample) images ({sizes['S']} samples per pixel); expected grey-level "
            "images.")
    if order.replace("S", "")[-2:] != "YX":
        raise InputDataError(f"{p}: bioio reports dimensions {order!r}; expected grey-level planes ending in YX.")
    letters: list[str] = []
    keep: list[int] = []  # positions in ``order`` of the leading dimensions kept
    spare = [c for c in dict.fromkeys("QI" + _SPARE_LETTERS) if c not in order]
    for i, d in enumerate(order):
        if d in "YXS" or sizes[d] == 1:
            continue
        letter = d if d in "TCZ" else (spare.pop(0) if spare else "")
        if not letter:
            raise InputDataError(f"{p}: dimensions {order!r} cannot be mapped to distinct axis letters.")
        letters.append(letter)
        keep.append(i)
    multi = len(scenes) > 1
    axes = validate_axes(("P" if multi else "") + "".join(letters) + "YX", what=f"{p}: axes")
    frame_shape = (sizes["Y"], sizes["X"])
    lead_shape = tuple(scene_shape[i] for i in keep)
    shape = ((len(scenes),) if multi else ()) + lead_shape + frame_shape
    image.set_scene(0)
    metadata = _vendor_metadata(image, axes, shape, scenes if multi else None, label)
    planes = VendorPlanes(str(p), fmt, order, scene_shape, tuple(keep), frame_shape, dtype, multi)
    return ImageDataset(SourceSpec(str(p), "vendor", None), fmt, axes, shape, dtype,
                        PlaneArray(shape, dtype, planes), metadata)


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _vendor_metadata(image: Any, axes: str, shape: tuple[int, ...], scenes: Sequence[str] | None,
                     label: str) -> dict[str, Any]:
    """The TIFF reader's metadata keys, from bioio's (first scene's) standard metadata; what is unknown is left out."""
    meta: dict[str, Any] = {"vendor": label}
    if scenes is not None:
        meta["series_names"] = list(scenes)
    with contextlib.suppress(Exception):  # metadata are a courtesy: a file whose pixels read is not refused for them
        sizes = image.physical_pixel_sizes  # bioio reports micrometres
        physical = {a: (v, "µm") for a in "XYZ" if (v := _positive(getattr(sizes, a, None))) is not None}
        if physical:
            meta["physical_size"] = physical
    if "C" in axes:
        with contextlib.suppress(Exception):
            names = [str(n) for n in image.channel_names]
            if len(names) == shape[axes.index("C")]:
                meta["channel_names"] = names
    with contextlib.suppress(Exception):
        interval = image.time_interval  # a datetime.timedelta, or None
        seconds = _positive(interval.total_seconds()) if interval is not None else None
        if seconds is not None:
            meta["time_increment"] = (seconds, "s")
    return meta


class _OpenedImage:
    """An open BioImage and the dask array of its current scene (a reader keeps one scene current)."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.scene: int | None = None
        self.array: Any = None

    def scene_array(self, scene: int) -> Any:
        if scene != self.scene:
            self.image.set_scene(scene)
            self.array, self.scene = self.image.dask_data, scene
        return self.array

    def close(self) -> None:
        self.image = self.array = self.scene = None


class VendorPlanes(_ReopeningReader):
    """Reads 2-D planes of an ND2 / CZI / LIF through bioio; the leading index is ``(p, *kept)`` or ``kept``.

    ``order`` and ``scene_shape`` are bioio's standard dimensions of every scene (``TCZYX``, maybe with
    ``S`` or ``M``); ``keep`` names the positions in ``order`` that are axes of the dataset, the others
    (size 1) are read at index 0. Picklable: the file is opened by whichever process reads.
    """

    def __init__(self, path: str, fmt: str, order: str, scene_shape: Sequence[int], keep: Sequence[int],
                 frame_shape: tuple[int, int], dtype: np.dtype, multi: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.order = order
        self.scene_shape = tuple(int(n) for n in scene_shape)
        self.keep = tuple(int(i) for i in keep)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.dtype = np.dtype(dtype)
        self.multi = multi
        self._init_handle()

    def _open(self) -> Any:
        return _OpenedImage(_open_image(self.path, self.fmt))

    def read(self, grid: np.ndarray) -> np.ndarray:
        """The planes at the leading indices ``grid`` (``(n, ndim-2)``) as an ``(n, Y, X)`` array."""
        import dask

        grid = np.asarray(grid, dtype=np.int64).reshape(len(grid), -1)
        out = np.empty((grid.shape[0], *self.frame_shape), dtype=self.dtype)
        if self.multi:
            scene_pos, inner = grid[:, 0], grid[:, 1:]
        else:
            scene_pos, inner = np.zeros(grid.shape[0], dtype=np.int64), grid
        with self._lock:
            opened = self._opened()
            for s in np.unique(scene_pos):
                rows = np.flatnonzero(scene_pos == s)
                try:
                    arr = opened.scene_array(int(s))
                    if tuple(arr.shape) != self.scene_shape:
                        raise InputDataError(f"{self.path}: scene {int(s)} now has shape {tuple(arr.shape)}, not "
                                             f"{self.scene_shape} as when it was opened; the file changed.")
                    lazy = [arr[self._index(inner[r])] for r in rows]
                    # one compute: planes sharing a stored chunk (a Z-stack, a tile) read it once; synchronous,
                    # because this already runs inside a dask task or a reading thread
                    planes = dask.compute(*lazy, scheduler="synchronous")
                    out[rows] = np.stack([np.asarray(pl) for pl in planes])
                except LivedenoiseError:
                    raise
                except Exception as exc:
                    shown = inner[rows][:4].tolist()
                    where = f" of scene {int(s)}" if self.multi else ""
                    raise InputDataError(
                        f"{self.path}: cannot read image plane(s) {shown}{where} ({_reason(exc)}); the "
                        "file may be truncated or corrupt.") from None
        return out

    def _index(self, lead: np.ndarray) -> tuple[Any, ...]:
        """The full bioio index of one plane: the kept dimensions from ``lead``, Y and X whole, the rest 0."""
        index: list[Any] = [0] * len(self.order)
        for k, i in enumerate(self.keep):
            index[i] = int(lead[k])
        index[self.order.index("Y")] = slice(None)
        index[self.order.index("X")] = slice(None)
        return tuple(index)
