"""Networks compiled with ``torch.compile`` for inference, falling back to the uncompiled network with one warning.

Why: on a CPU, PyTorch's eager mode runs every activation, concatenation and upsampling as its own pass over memory.
Inductor fuses them with their neighbours and, with ``freezing``, turns the weights into constants of the compiled
graph, which lets it prepack them for oneDNN's convolutions. Where the convolutions themselves are fast (bf16 on a CPU
with AMX) the other passes weigh most, and compiling removes much of them (README "Compiled networks"). Compiling costs
seconds per input shape, and it needs a C++ compiler, which not every machine has: it is opt-in
(``Denoiser(compiled=True)``, ``denoise --compile``), and where it cannot compile the network runs as it is, with one
warning saying why.

The compiled forms live in a ``store`` (a dict) that the caller keeps beside its networks -- the Denoiser's engine --
so that they go when the networks go: a compiled form holds its network, and a cache keyed by the network would keep
both alive forever.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger("livedenoise")

Network = Callable[[torch.Tensor], torch.Tensor]

#: Input shapes compiled per network. Each one is a graph of its own (``dynamic=False``: a live frame or a batch job's
#: tiles come in a few fixed shapes, for which static code is fastest); further shapes run uncompiled.
MAX_SHAPES = 8

#: What a failed compilation raises: dynamo's and inductor's errors (a missing C++ compiler arrives as an
#: ``InductorError``), a C++ compiler's error, or the compiler not found at all. Anything else -- an out-of-memory
#: error, a wrong input -- is the network's own and propagates as it would uncompiled.
COMPILE_ERRORS: tuple[type[BaseException], ...] = (torch._dynamo.exc.TorchDynamoException,
                                                   torch._inductor.exc.CppCompileError, FileNotFoundError)


@dataclass
class _Compiled:
    fn: Network
    shapes: set[tuple[Any, ...]] = field(default_factory=set)  # the input shapes (and dtypes) compiled so far
    failed: bool = False


class CompiledNetworks:
    """Runs networks through their compiled forms. ``enabled=False`` runs every network as it is.

    A call with an input shape not yet compiled for that network compiles it: one compilation at a time in the
    process, with inductor's ``freezing`` set (it is read from the global configuration when dynamo traces, so it
    cannot be passed per call). Calls with compiled shapes run concurrently, without a lock.
    """

    _compile_lock = threading.Lock()  # process-wide: inductor's configuration is global

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)
        self._lock = threading.Lock()
        self.failure: str | None = None  #: why a network could not be compiled (None: no failure)
        self._warned_shapes = False

    def __call__(self, store: dict[int, Any], net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``net(x)``, compiled where possible. ``store``: where ``net``'s compiled form is kept (see the module)."""
        if not self.enabled:
            return net(x)
        with self._lock:
            entry = store.get(id(net))
            if entry is None:  # lazy: inductor compiles at the first call of each input shape
                # isolate_recompiles: this network's own limit of graphs, not one shared with every compiled UNet2D
                # of the process (torch 2.13's overloads of compile() do not list these two keywords yet)
                compiled = torch.compile(net, dynamic=False, isolate_recompiles=True,  # type: ignore[call-overload]
                                         recompile_limit=MAX_SHAPES + 1)
                entry = store[id(net)] = _Compiled(compiled)
        if entry.failed:
            return net(x)
        shape = (*x.shape, x.dtype, x.is_contiguous(memory_format=torch.channels_last))
        if shape in entry.shapes:
            return entry.fn(x)
        if len(entry.shapes) >= MAX_SHAPES:
            if not self._warned_shapes:
                self._warned_shapes = True
                log.warning("torch.compile: the network is compiled for %d input shapes; new shapes (here %s) run "
                            "uncompiled", MAX_SHAPES, tuple(x.shape))
            return net(x)
        with CompiledNetworks._compile_lock, torch._inductor.config.patch(freezing=True):
            try:
                out = entry.fn(x)
            except COMPILE_ERRORS as exc:
                self._failed(entry, exc)
                return net(x)
            entry.shapes.add(shape)
        return out

    def _failed(self, entry: _Compiled, exc: BaseException) -> None:
        text = str(exc).strip()
        reason = f"{exc.__class__.__name__}: {text.splitlines()[0] if text else ''}"
        with self._lock:
            entry.failed = True
            first = self.failure is None
            self.failure = reason
        if first:
            log.warning("torch.compile could not compile the network (%s); it runs uncompiled, as fast as without "
                        "--compile", reason[:300])
