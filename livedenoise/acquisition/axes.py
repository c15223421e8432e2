"""The one key by which a frame's axes are looked up (raw store, recorder hand-over)."""
from __future__ import annotations

from typing import Any


def axes_key(axes: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable, order-independent key for an axes dict such as ``{"time": 3, "channel": 0}``."""
    return tuple(sorted((str(k), v) for k, v in axes.items()))
