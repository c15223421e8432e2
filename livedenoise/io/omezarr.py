"""OME-Zarr output (OME-NGFF 0.5, Zarr v3) for batch denoising: blocks written in place as they finish, resumable.

Why these libraries: ``yaozarrs`` (the OME-Zarr metadata models and writer that pymmcore-plus's own
``ome-writers`` builds on) creates the group, its NGFF metadata and empty arrays; ``tensorstore`` writes each
finished block into its region, from any thread or dask worker, so a batch job writes an OME-Zarr the way it
writes an OME-TIFF: in place, in any block order, and an interrupted job resumes into the same arrays.

Layout: the dataset's axes in NGFF order -- ``t``, then ``c`` and any other non-spatial axis, then ``z y x``
(at most five; NGFF's limit) -- each axis named by its lower-case letter; frames are chunks. Stage positions
(``P``) become one image each in a ``bioformats2raw`` layout (``0/``, ``1/``, ...). The livedenoise provenance
sits in the root group's attributes under ``"livedenoise"``. Physical pixel sizes and the time step of the
input are kept as NGFF scales.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError, LivedenoiseError
from livedenoise.io.axes import AXES
from livedenoise.io.dataset import ImageDataset, SourceSpec
from livedenoise.io.planes import PlaneArray

#: OME unit symbols -> NGFF (UDUNITS-2) unit names.
_UNITS = {"µm": "micrometer", "um": "micrometer", "micron": "micrometer", "nm": "nanometer", "mm": "millimeter",
          "m": "meter", "s": "second", "sec": "second", "ms": "millisecond", "min": "minute", "h": "hour"}
#: NGFF axis type of our non-spatial letters (``t``/``c`` have their own; the rest are custom types).
_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
#: Arrays this process has open for writing (tensorstore handles), the most recently used ``MAX_OPEN`` kept.
MAX_OPEN = 16
_OPEN: OrderedDict[tuple[str, str], Any] = OrderedDict()
_OPEN_LOCK = threading.Lock()


def ngff_order(axes: str) -> tuple[str, tuple[int, ...]]:
    """(the image axes in NGFF order, the permutation taking the dataset's image axes to it); ``P`` excluded.

    Raises :class:`InputDataError` for more than five image axes, which NGFF cannot hold.
    """
    image = axes[1:] if axes.startswith("P") else axes
    order = ([a for a in image if a == "T"] + [a for a in image if a == "C"]
             + [a for a in image if a not in "TCZYX"] + [a for a in image if a in "ZYX"])
    if len(order) > 5 or sum(a not in "TZYX" for a in order) > 1:
        raise InputDataError(f"axes {axes!r}: an OME-Zarr image holds at most 5 dimensions -- time, one channel (or "
                             "other) axis, z, y, x -- besides positions; write this dataset as ome-tiff or ndtiff")
    return "".join(order), tuple(image.index(a) for a in order)


def _image_model(order: str, shape: Sequence[int], metadata: dict[str, Any]) -> Any:
    from yaozarrs import DimSpec, v05

    physical = metadata.get("physical_size") or {}
    dims = []
    for a, n in zip(order, shape, strict=True):
        scale, unit = 1.0, None
        if a in physical:
            scale, unit = float(physical[a][0]), _UNITS.get(str(physical[a][1]), None)
        elif a == "T" and metadata.get("time_increment"):
            scale, unit = float(metadata["time_increment"][0]), _UNITS.get(str(metadata["time_increment"][1]), None)
        dims.append(DimSpec(name=a.lower(), size=int(n), scale=scale, unit=unit, type=_TYPES.get(a, "other"),
                            scale_factor=1.0))
    return v05.Image(multiscales=[v05.Multiscale.from_dims(dims, n_levels=1)])


@dataclass(frozen=True)
class OmeZarrTarget:
    """An OME-Zarr being written: where it is and how the dataset's axes map onto its arrays (small, picklable)."""

    path: str
    axes: str  # the dataset's axes (P first if any)
    shape: tuple[int, ...]
    dtype: str
    token: str = ""  # set at creation: an open handle of an earlier output at the same path is never reused

    @property
    def has_p(self) -> bool:
        return self.axes.startswith("P")

    def array_paths(self) -> list[str]:
        """The array of each position (one when there are no positions)."""
        if self.has_p:
            return [os.path.join(self.path, str(p), "0") for p in range(self.shape[0])]
        return [os.path.join(self.path, "0")]

    def _array(self, p: int) -> Any:
        import tensorstore as ts

        path = self.array_paths()[p]
        key = (path, self.token)
        with _OPEN_LOCK:
            arr = _OPEN.get(key)
            if arr is None:
                spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}
                arr = _OPEN[key] = ts.open(spec, open=True).result()
                if tuple(arr.shape) != self._array_shape() or np.dtype(arr.dtype.numpy_dtype) != np.dtype(self.dtype):
                    del _OPEN[key]
                    raise LivedenoiseError(f"{path}: the OME-Zarr array is not the one this job created (shape "
                                           f"{tuple(arr.shape)}, {arr.dtype}); start again with --overwrite.")
            _OPEN.move_to_end(key)
            while len(_OPEN) > MAX_OPEN:
                _OPEN.popitem(last=False)
            return arr

    def _array_shape(self) -> tuple[int, ...]:
        _, perm = ngff_order(self.axes)
        image_shape = self.shape[1:] if self.has_p else self.shape
        return tuple(image_shape[i] for i in perm)

    def write_block(self, ranges: Sequence[tuple[int, int]], data: np.ndarray) -> None:
        """Write ``data`` (the block at ``ranges`` of the dataset's leading axes, then Y and X) into its region."""
        _, perm = ngff_order(self.axes)
        ranges = list(ranges)
        positions = range(*ranges.pop(0)) if self.has_p else [None]
        for k, p in enumerate(positions):
            sub = data[k] if p is not None else data
            region = [slice(a, b) for a, b in ranges] + [slice(None), slice(None)]
            target = self._array(p or 0)
            target[tuple(region[i] for i in perm)].write(np.transpose(np.asarray(sub, self.dtype), perm)).result()

    def check(self) -> None:
        """Raise if the arrays on disk are not the ones this target was created with (for ``--resume``)."""
        want = self._array_shape()
        for p, path in enumerate(self.array_paths()):
            try:
                meta = json.loads(Path(path, "zarr.json").read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise LivedenoiseError(f"{self.path}: the partial OME-Zarr cannot be read ({exc}); start again with "
                                       "--overwrite.") from None
            if tuple(meta.get("shape", ())) != want or np.dtype(meta.get("data_type", "")) != np.dtype(self.dtype):
                raise LivedenoiseError(f"{self.path}: the partial OME-Zarr's array {p} changed since the interrupted "
                                       "run; start again with --overwrite.")


def create_ome_zarr(path: str | os.PathLike[str], dataset: Any, dtype: np.dtype | str,
                    provenance: dict[str, Any]) -> OmeZarrTarget:
    """Create an OME-Zarr with ``dataset``'s axes, shape and physical sizes, pixel type ``dtype``, no pixels yet."""
    from yaozarrs.write.v05 import Bf2RawBuilder, prepare_image

    dtype = np.dtype(dtype)
    axes, shape = dataset.axes, tuple(int(n) for n in dataset.shape)
    order, perm = ngff_order(axes)
    image_shape = shape[1:] if axes.startswith("P") else shape
    ngff_shape = tuple(image_shape[i] for i in perm)
    chunks = (1,) * (len(ngff_shape) - 2) + ngff_shape[-2:]  # one frame per chunk: blocks are whole frames
    image = _image_model(order, ngff_shape, getattr(dataset, "metadata", {}) or {})
    forget_open_arrays(path)
    attrs = {"livedenoise": provenance}
    if axes.startswith("P"):
        builder = Bf2RawBuilder(path, writer="tensorstore", chunks=chunks, extra_attributes=attrs)
        for p in range(shape[0]):
            builder.add_series(str(p), image, (ngff_shape, dtype))
        builder.prepare()
    else:
        prepare_image(path, image, (ngff_shape, dtype), writer="tensorstore", chunks=chunks, extra_attributes=attrs)
    return OmeZarrTarget(str(path), axes, shape, dtype.str, token=uuid.uuid4().hex)


def update_zarr_provenance(path: str | os.PathLike[str], provenance: dict[str, Any]) -> None:
    """Replace the ``"livedenoise"`` attribute of the root group (written atomically)."""
    meta_path = Path(path) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta.setdefault("attributes", {})["livedenoise"] = provenance
    tmp = meta_path.with_name("zarr.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, meta_path)


def forget_open_arrays(path: str | os.PathLike[str]) -> None:
    """Drop this process's open handles below ``path`` (before the folder is renamed or removed)."""
    prefix = str(path)
    with _OPEN_LOCK:
        for key in [k for k in _OPEN if k[0].startswith(prefix)]:
            del _OPEN[key]


# ---------------------------------------------------------------------------------------------
# reading (an OME-Zarr as batch input)
# ---------------------------------------------------------------------------------------------
#: NGFF axis names -> livedenoise axis letters (other names: their upper-case first letter when free).
_LETTERS = {"t": "T", "time": "T", "c": "C", "channel": "C", "z": "Z", "y": "Y", "x": "X"}


def _group_meta(path: Path) -> dict[str, Any] | None:
    """A Zarr group's attributes (v3 ``zarr.json``, or v2 ``.zattrs``), or None when ``path`` is not a group."""
    try:
        if (path / "zarr.json").is_file():
            meta = json.loads((path / "zarr.json").read_text())
            return meta.get("attributes", {}) if meta.get("node_type") == "group" else None
        if (path / ".zgroup").is_file():
            return json.loads((path / ".zattrs").read_text()) if (path / ".zattrs").is_file() else {}
    except (OSError, json.JSONDecodeError):
        return None
    return None


def _ome(attrs: dict[str, Any]) -> dict[str, Any]:
    """The OME part of a group's attributes (NGFF 0.5 nests it under ``"ome"``; 0.4 keeps it at the top)."""
    return attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs


def _corrupt_group_meta(path: Path) -> str | None:
    """What is wrong with a group metadata file of ``path`` that exists but cannot be read as JSON, else None."""
    for name in ("zarr.json", ".zattrs", ".zgroup"):
        meta = path / name
        if meta.is_file():
            try:
                json.loads(meta.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                return f"{meta}: is not valid JSON ({exc}); the Zarr's metadata is corrupt or truncated"
    return None


def is_ome_zarr(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding an OME-Zarr image (``multiscales``) or a ``bioformats2raw`` collection of images, and
    for a Zarr folder whose metadata cannot be read (opening it then says so, rather than "no images found")."""
    p = Path(path)
    if not p.is_dir():
        return False
    attrs = _group_meta(p)
    if attrs is None:
        return _corrupt_group_meta(p) is not None
    return "multiscales" in _ome(attrs) or "bioformats2raw.layout" in _ome(attrs)


def _image_groups(root: Path) -> list[Path]:
    """The image groups of an OME-Zarr: the root itself, or the series ``0/``, ``1/``, ... of a bioformats2raw
    layout."""
    corrupt = _corrupt_group_meta(root)
    if corrupt:
        raise InputDataError(corrupt)
    ome = _ome(_group_meta(root) or {})
    if "multiscales" in ome:
        return [root]
    listed = _ome(_group_meta(root / "OME") or {}).get("series")  # the collection's own list, when it has one
    series = ([root / str(name) for name in listed] if listed else
              sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)))
    groups = [p for p in series if "multiscales" in _ome(_group_meta(p) or {})]
    if not groups:
        raise InputDataError(f"{root}: a bioformats2raw OME-Zarr without image series (0/, 1/, ...)")
    return groups


@dataclass
class ZarrPlanes:
    """Reads 2-D planes of OME-Zarr arrays (one per position) with tensorstore; picklable, opened lazily per process."""

    arrays: tuple[str, ...]  # one array folder per position
    driver: str  # "zarr3" or "zarr"
    multi: bool  # the leading index starts with the position

    def __post_init__(self) -> None:
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"arrays": self.arrays, "driver": self.driver, "multi": self.multi}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def _array(self, i: int) -> Any:
        import tensorstore as ts

        path = self.arrays[i]
        with self._lock:
            if path not in self._handles:
                # a chunk never written is an error, not a plane of fill values (an acquisition cut short)
                spec = {"driver": self.driver, "kvstore": {"driver": "file", "path": path},
                        "fill_missing_data_reads": False}
                self._handles[path] = ts.open(spec, open=True, read=True).result()
            return self._handles[path]

    def read(self, grid: np.ndarray) -> np.ndarray:
        """The planes at the leading indices ``grid`` (``(n, ndim-2)``) as an ``(n, Y, X)`` array."""
        planes = []
        for row in np.asarray(grid, np.int64):
            p, inner = (int(row[0]), tuple(int(i) for i in row[1:])) if self.multi else (0, tuple(int(i) for i in row))
            try:
                planes.append(np.asarray(self._array(p)[inner].read().result()))
            except Exception as exc:  # tensorstore raises for missing (fill_missing_data_reads off) or corrupt chunks
                raise InputDataError(f"{self.arrays[p]}: cannot read plane {list(inner)} ({exc.__class__.__name__}: "
                                     f"{exc}); the OME-Zarr may be incomplete or corrupt") from None
        return np.stack(planes)

    def close(self) -> None:
        with self._lock:
            self._handles.clear()


def open_ome_zarr(path: str | os.PathLike[str]) -> Any:
    """An OME-Zarr (NGFF 0.4 or 0.5; one image, or a bioformats2raw collection of same-shaped images as positions)
    as an :class:`~livedenoise.io.ImageDataset`, read lazily plane by plane; the full-resolution level only."""

    root = Path(path)
    groups = _image_groups(root)
    first = _ome(_group_meta(groups[0]) or {})["multiscales"][0]
    names = [a["name"] if isinstance(a, dict) else str(a) for a in first["axes"]]
    types = [a.get("type") if isinstance(a, dict) else None for a in first["axes"]]
    spatial = [n for n, t in zip(names, types, strict=True) if t == "space"]
    letters: list[str] = []
    for n, kind in zip(names, types, strict=True):
        # the NGFF type first (a time axis named "frame" is still time), then the name
        by_type = {"time": "T", "channel": "C"}.get(kind or "")
        if kind == "space" and n.lower() not in ("x", "y", "z"):
            by_type = "ZYX"[-len(spatial):][spatial.index(n)]
        letter = by_type or _LETTERS.get(n.lower()) or n[:1].upper()
        if letter in letters or letter not in AXES or letter == "P":
            letter = next((c for c in "QIRKAE" if c not in letters), "")
        if not letter:
            raise InputDataError(f"{root}: cannot name its axes {names} with livedenoise's axis letters")
        letters.append(letter)
    if letters[-2:] != ["Y", "X"]:
        raise InputDataError(f"{root}: OME-Zarr axes {names} do not end with y, x; expected grey-level images")
    level0 = first["datasets"][0]["path"]
    arrays, shape, dtype, driver = [], None, None, ""
    for g in groups:
        folder = g / level0
        if (folder / "zarr.json").is_file():
            meta, driver = json.loads((folder / "zarr.json").read_text()), "zarr3"
            s, dt = tuple(meta["shape"]), np.dtype(meta["data_type"])
        elif (folder / ".zarray").is_file():
            meta, driver = json.loads((folder / ".zarray").read_text()), "zarr"
            s, dt = tuple(meta["shape"]), np.dtype(meta["dtype"]).newbyteorder("=")  # tensorstore returns native order
        else:
            raise InputDataError(f"{folder}: the OME-Zarr's level-0 array is missing")
        if shape is not None and (s, dt) != (shape, dtype):
            raise InputDataError(f"{root}: its images differ in shape or type ({shape}, {dtype} vs {s}, {dt}); "
                                 "expected positions of identical shape")
        shape, dtype = s, dt
        arrays.append(str(folder))
    assert shape is not None and dtype is not None
    if dtype.kind not in "uif":
        raise InputDataError(
            f"{root}: pixel type {dtype} is not supported; expected integer or floating-point grey values")
    multi = len(groups) > 1
    axes = ("P" if multi else "") + "".join(letters)
    full_shape = ((len(groups),) if multi else ()) + tuple(int(n) for n in shape)
    scale = next((t.get("scale") for t in first["datasets"][0].get("coordinateTransformations", [])
                  if t.get("type") == "scale"), None)
    units: dict[str, Any] = {ltr: (a.get("unit") if isinstance(a, dict) else None)
                             for ltr, a in zip(letters, first["axes"], strict=True)}
    metadata: dict[str, Any] = {"ome_zarr_axes": names}
    outer = next((t.get("scale") for t in first.get("coordinateTransformations") or []
                  if t.get("type") == "scale"), None)
    if scale and outer:  # a multiscale-level scale applies on top of the dataset's
        scale = [float(a) * float(b) for a, b in zip(scale, outer, strict=False)]
    symbol = {v: k for k, v in _UNITS.items() if k in ("µm", "nm", "mm", "m", "s", "ms", "min", "h")}
    if scale:  # sizes only in units we can name; an unknown unit leaves the size out rather than guessing
        physical = {ltr: (float(v), symbol[units[ltr]]) for ltr, v in zip(letters, scale, strict=False)
                    if ltr in "ZYX" and units.get(ltr) in symbol}
        if physical:
            metadata["physical_size"] = physical
        if "T" in letters and units.get("T") in symbol:
            metadata["time_increment"] = (float(scale[letters.index("T")]), symbol[units["T"]])
    if multi:
        metadata["series_names"] = [g.name for g in groups]
    planes = ZarrPlanes(tuple(arrays), driver, multi)
    return ImageDataset(SourceSpec(str(root), "ome-zarr", None), "ome-zarr", axes, full_shape, dtype,
                        PlaneArray(full_shape, dtype, planes), metadata)
