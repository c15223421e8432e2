"""Split into :mod:`livedenoise.acquisition.display` (DenoiseWorker, DenoisedFrame, WorkerStats) and
:mod:`livedenoise.acquisition.recorder` (DenoisedWriter); this path warns and goes away next release."""
from __future__ import annotations

from typing import Any

from livedenoise._moved import moved_module

_display = moved_module(__name__, "livedenoise.acquisition.display", stacklevel=3)
_recorder = moved_module(__name__, "livedenoise.acquisition.recorder", stacklevel=3)


def __getattr__(name: str) -> Any:
    return _recorder(name) if name == "DenoisedWriter" else _display(name)

__all__ = [  # the old module's public names, so `from old import *` still works (each one warns)
    "DenoiseWorker",
    "DenoisedFrame",
    "DenoisedWriter",
    "WorkerStats",
]
