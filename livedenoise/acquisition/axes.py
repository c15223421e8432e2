"""The one key by which a frame's axes are looked up (raw store, recorder hand-over), and what makes a series."""
from __future__ import annotations

from typing import Any


def axes_key(axes: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable, order-independent key for an axes dict such as ``{"time": 3, "channel": 0}``."""
    return tuple(sorted((str(k), v) for k, v in axes.items()))


#: Names of the time axis: pycromanager's and pymmcore-plus's (useq's).
TIME_AXES: tuple[str, ...] = ("time", "t")


def series_key(axes: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The key of a frame's series: its axes but time (the frames a temporal model may fuse)."""
    return axes_key({k: v for k, v in axes.items() if k not in TIME_AXES})
