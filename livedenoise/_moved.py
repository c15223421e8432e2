"""Old module paths keep working for a release after a rename, with a warning that names the new one.

A renamed module's old file becomes ``__getattr__ = moved_module(__name__, "new.module")``: an ``import`` of
the old path still succeeds (nothing is loaded until a name is used), and each name looked up there is
taken from the new module with a :class:`DeprecationWarning` (the pattern of nd2's ``nd2file.py``).
"""
from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_module(old: str, new: str, stacklevel: int = 2) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that forwards every name to ``new``, warning once per lookup.

    ``stacklevel`` points the warning at the user's import line: 2 when the result is the module's
    ``__getattr__`` itself, one more for each function that wraps it.
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(new), name)  # AttributeError names `new` if it is not there
        warnings.warn(f"{old} was renamed {new}; import {name} from there ({old} goes away in the next release)",
                      DeprecationWarning, stacklevel=stacklevel)
        return value

    return __getattr__
