"""Small helpers to read NDTiff datasets (what pycromanager / Micro-Manager save) into numpy.

NDTiff stores each image under a dict of named axes (``{"time": 3, "position": 1}``); analysis code
wants one array and the names of its axes. :func:`read_ndtiff` gives exactly that, in ndstorage's
own axis order (row, column, position, time, channel/custom, z, then y, x), so batch denoising,
evaluation and ``livedenoise simulate`` all agree on what index means what.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError

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
