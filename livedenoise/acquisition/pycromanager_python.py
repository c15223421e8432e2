"""Make a pymmcore core (real device adapters, pymmcore-plus's ``UniMMCore``, the simulator) pycromanager's core.

pycromanager's Python backend normally starts its own core (``start_headless(python_backend=True)``);
an ``Acquisition`` on a core the user already built needs the same wiring, done here. Generic: nothing
here knows about the simulated microscope.
"""
from __future__ import annotations

import sys
import types
from typing import Any


def register_with_pycromanager(core: Any) -> None:
    """Make ``core`` the core of pycromanager's Python backend (what ``start_headless(python_backend=True)`` does).

    Attaches mmpycorex' ``get_tagged_image``/``pop_next_tagged_image``/``TaggedImage``, puts the core
    first in ``mmpycorex.launcher._PYMMCORES`` (so ``Acquisition`` picks the Python backend and
    ``pycromanager.Core()`` returns it) and points the process-wide acquisition ``Engine`` at it.
    """
    from mmpycorex import launcher
    from pycromanager.acquisition.acq_eng_py.internal.engine import Engine

    core.get_tagged_image = types.MethodType(launcher.get_tagged_image, core)
    core.pop_next_tagged_image = types.MethodType(launcher.pop_next_tagged_image, core)
    core.TaggedImage = launcher.TaggedImage
    if core in launcher._PYMMCORES:
        launcher._PYMMCORES.remove(core)
    launcher._PYMMCORES.insert(0, core)
    engine = Engine.get_instance()
    if engine is not None and getattr(engine.acq_executor, "_shutdown", False):
        del Engine.singleton  # a shut-down engine cannot run anything: build a fresh one
        engine = None
    if engine is None:
        Engine(core)
    else:
        engine.core = core


def unregister_from_pycromanager(core: Any) -> None:
    """Remove ``core`` from pycromanager's Python backend; the engine falls back to the next one, if any.

    Only looks at modules already imported: this also runs at interpreter exit, when importing
    pycromanager (and dask behind it) is no longer possible.
    """
    launcher = sys.modules.get("mmpycorex.launcher")
    if launcher is not None:
        while core in launcher._PYMMCORES:
            launcher._PYMMCORES.remove(core)
    engine_module = sys.modules.get("pycromanager.acquisition.acq_eng_py.internal.engine")
    engine = engine_module.Engine.get_instance() if engine_module is not None else None
    if engine is not None and engine.core is core and launcher is not None and launcher._PYMMCORES:
        engine.core = launcher._PYMMCORES[0]
