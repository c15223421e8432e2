"""The simulated core as pycromanager's Python-backend core, without livedenoise (the simulator never imports it).

pycromanager's Python backend normally builds its own core in ``start_headless(python_backend=True)``; the
simulator hands it one that already exists, with the same three steps (docs/design.md, "Verified facts"):
mmpycorex' tagged-image methods attached, the core first in ``mmpycorex.launcher._PYMMCORES``, and the
process-wide ``Engine`` pointed at it. livedenoise does the same for a user's own core in its pycromanager
backend; the two stay separate so that neither package imports the other.
"""
from __future__ import annotations

import sys
import types
from typing import Any


def link(core: Any) -> None:
    """Make ``core`` the core that ``pycromanager.Acquisition`` and ``pycromanager.Core()`` use in this process."""
    from mmpycorex import launcher
    from pycromanager.acquisition.acq_eng_py.internal.engine import Engine

    for name in ("get_tagged_image", "pop_next_tagged_image"):
        setattr(core, name, types.MethodType(getattr(launcher, name), core))
    core.TaggedImage = launcher.TaggedImage
    launcher._PYMMCORES[:] = [core, *(c for c in launcher._PYMMCORES if c is not core)]
    engine = Engine.get_instance()
    if engine is not None and getattr(engine.acq_executor, "_shutdown", False):
        del Engine.singleton  # a shut-down engine runs nothing: the next line builds a fresh one
        engine = None
    if engine is None:
        Engine(core)
    else:
        engine.core = core


def unlink(core: Any) -> None:
    """Forget ``core`` (it is closing); the engine moves on to the next registered core, if any. Touches only
    modules already imported, since this also runs at interpreter exit."""
    launcher = sys.modules.get("mmpycorex.launcher")
    remaining = []
    if launcher is not None:
        launcher._PYMMCORES[:] = remaining = [c for c in launcher._PYMMCORES if c is not core]
    engine_module = sys.modules.get("pycromanager.acquisition.acq_eng_py.internal.engine")
    engine = engine_module.Engine.get_instance() if engine_module is not None else None
    if engine is not None and engine.core is core and remaining:
        engine.core = remaining[0]
