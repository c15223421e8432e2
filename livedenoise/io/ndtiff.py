"""NDTiff (what pycromanager / Micro-Manager save): the lazy dataset reader and helpers that read one into numpy.

NDTiff stores each image under a dict of named axes (``{"time": 3, "position": 1}``); analysis code
wants one array and the names of its axes. :func:`read_ndtiff` gives exactly that, in ndstorage's
own axis order (row, column, position, time, channel/custom, z, then y, x), so batch denoising,
evaluation and ``livedenoise simulate`` all agree on what index means what.
:func:`open_ndtiff_dataset` opens one lazily as an :class:`~livedenoise.io.dataset.ImageDataset`.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError
from livedenoise.io.axes import _SPARE_LETTERS, NDTIFF_LETTERS
from livedenoise.io.dataset import ImageDataset, SourceSpec
from livedenoise.io.planes import PlaneArray, _ReopeningReader

log = logging.getLogger("livedenoise")


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
        return {name: vals[int(i)] for name, vals, i in zip(self.names, self.values, index, strict=True)}

    def read(self, grid: np.ndarray) -> np.ndarray:
        out = np.zeros((grid.shape[0], *self.frame_shape), dtype=self.dtype)
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
    """Open an NDTiff dataset read-only."""
    return open_ndtiff(path)


def is_ndtiff_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "NDTiff.index").is_file()


def open_ndtiff_dataset(path: Path) -> ImageDataset:
    ds = _open_ndstorage(str(path))
    try:
        if ds.image_height is None or ds.dtype is None:
            raise InputDataError(f"{path}: the NDTiff dataset holds no images.")
        if getattr(ds, "bytes_per_pixel", 2) == 3:
            raise InputDataError(f"{path}: holds RGB images; expected grey-level images.")

        axis_values = dataset_axes(ds)
        names = list(axis_values)
        # P first (it becomes OME image series), then ndstorage's own order (time, channel, z, ...)
        names.sort(key=lambda n: 0 if n == "position" else 1)
        letters: dict[str, str] = {}
        spare = iter(c for c in _SPARE_LETTERS)
        for n in names:
            letter = NDTIFF_LETTERS.get(n)
            if letter is None or letter in letters.values():
                letter = next((c for c in spare if c not in letters.values() and c not in NDTIFF_LETTERS.values()),
                              None)
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
        "axis_values": {letters[n]: v for n, v in zip(names, values, strict=True)},
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


AxisValue = int | str


@dataclass
class NDTiffArray:
    """An NDTiff dataset as one array: ``data`` has axes ``axes`` (the last two are ``y``, ``x``).

    ``coords[axis]`` lists the axis values in array order (ints, or strings such as channel names).
    """

    data: np.ndarray
    axes: tuple[str, ...]
    coords: dict[str, list[AxisValue]]
    path: Path
    summary_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(read_ndtiff(path))`` is the pixel array (``.data``), not a 0-d array of this object."""
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def index_of(self, coordinates: dict[str, AxisValue]) -> tuple[int, ...]:
        """Array index (without y, x) of the image saved at ``coordinates`` (missing axes -> 0)."""
        return tuple(self.coords[a].index(coordinates[a]) if a in coordinates else 0 for a in self.axes[:-2])


def open_ndtiff(path: str | Path) -> Any:
    """Open an NDTiff dataset folder with ndstorage; one clear error if it is not one."""
    from ndstorage import Dataset

    path = Path(path)
    if not path.is_dir():
        raise InputDataError(f"{path}: NDTiff dataset folder not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # ndstorage prints "Reading index..."
            return Dataset(str(path))
    except Exception as exc:  # ndstorage raises bare Exceptions
        raise InputDataError(f"{path}: not a readable NDTiff dataset ({exc})") from None


def dataset_axes(dataset: Any) -> dict[str, list[AxisValue]]:
    """Axis names (ndstorage order) and their values, in the order ``as_array`` stacks them."""
    return {name: list(values) for name, values in dataset.axes.items()}


def iter_images(dataset: Any) -> Iterator[tuple[dict[str, AxisValue], np.ndarray]]:
    """Yield ``(coordinates, image)`` for every image, in the order they are indexed."""
    for coords in dataset.get_image_coordinates_list():
        yield dict(coords), np.asarray(dataset.read_image(**coords))


def read_ndtiff(path: str | Path) -> NDTiffArray:
    """Load a whole NDTiff dataset into memory as an :class:`NDTiffArray` (camera dtype kept).

    Images missing from a regular grid (an aborted acquisition) are zeros, as in ndstorage.
    For data larger than memory use ``open_ndtiff(path).as_array()`` (a dask array) instead.
    """
    dataset = open_ndtiff(path)
    try:
        coords = dataset_axes(dataset)
        data = np.asarray(dataset.as_array())
        summary = dict(dataset.summary_metadata or {})
    finally:
        dataset.close()
    return NDTiffArray(data=data, axes=(*coords, "y", "x"), coords=coords, path=Path(path), summary_metadata=summary)
