"""Networks compiled with ``torch.compile`` for inference, falling back to the uncompiled network with one warning.

Why: on a CPU, PyTorch's eager mode runs every activation, concatenation and upsampling as its own pass over memory.
Inductor fuses them into the convolutions' neighbours and, with ``freezing``, folds the frozen weights into
prepacked oneDNN kernels. Where the convolutions themselves are fast (bf16 on a CPU with AMX) those other passes
weigh most, and compiling removes much of them (README "Compiled networks"). Compiling costs seconds per input
shape, and it needs a C++ compiler, which not every machine has: it is opt-in (``Denoiser(compiled=True)``,
``denoise --compile``), and where it cannot compile the network runs as it is, with one warning saying why.
"""
from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger("livedenoise")

#: Inductor options: the weights are constants of the compiled graph (inference only: nothing trains these copies).
COMPILE_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {"freezing": True}

Network = Callable[[torch.Tensor], torch.Tensor]


class CompiledNetworks:
    """The compiled form of each network it is asked for, made once and kept as long as the network lives.

    ``enabled=False`` hands every network back as it is. Each input shape compiles once (``dynamic=False``: a live
    frame or a batch job's tiles have a few fixed shapes, for which static code is fastest).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)
        self._compiled: weakref.WeakKeyDictionary[nn.Module, Network] = weakref.WeakKeyDictionary()
        self._failed: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.failure: str | None = None  #: why the last network could not be compiled (None: no failure)

    def runner(self, net: nn.Module) -> Network:
        """What to call for ``net``: its compiled form, or ``net`` itself when compiling is off or failed."""
        if not self.enabled:
            return net
        with self._lock:
            if net in self._failed:
                return net
            fn = self._compiled.get(net)
            if fn is None:  # lazy: inductor compiles at the first call, for that call's input shape
                fn = torch.compile(net, dynamic=False, options=COMPILE_OPTIONS)
                self._compiled[net] = fn
            return fn

    def __call__(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``net(x)``, compiled where possible. A compilation that fails leaves ``net`` uncompiled for good."""
        fn = self.runner(net)
        if fn is net:
            return net(x)
        try:
            return fn(x)
        except Exception as exc:  # no C++ compiler, an operator inductor cannot lower...: run it as it is
            reason = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            with self._lock:
                self._failed.add(net)
                self._compiled.pop(net, None)
                first = self.failure is None
                self.failure = reason
            if first:
                log.warning("torch.compile could not compile the network (%s); it runs uncompiled, as fast as "
                            "without --compile", reason[:300])
            return net(x)
