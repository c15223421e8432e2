"""Keep the memory PyTorch frees on the CPU for reuse, instead of handing it back to the OS after every layer.

Why: glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, raised at most to 32 MiB) with
fresh pages from the kernel and gives them back on ``free``. A U-Net pass allocates and frees activations of
several MB to GB (a 512² frame's first level is 16 MB, a 2048² frame's 256 MB), so every frame paid page faults
and the kernel's zero-filling of new pages, over and over: in a profile of the fast backbone on a 512² frame, a
``torch.cat`` of two 16-channel maps took 24 ms for 32 MB, 5 ms once the pages were kept. Keeping freed blocks in
the process (``mallopt(M_MMAP_MAX, 0)`` and a 2 GiB trim threshold, what Intel's PyTorch tuning guide gets from
jemalloc or tcmalloc, without a preloaded library) made whole frames faster on the 2-core development CPU
(``benchmarks/bench_allocator.py``, README "Speed: the CPU's memory allocator").

The cost: the process keeps the peak working memory of a pass instead of returning it between frames (after a
2048² frame with the fast backbone, 2.6 GB resident instead of 0.4 GB), and freed blocks of other sizes can leave
the heap fragmented. So a batch job, whose memory budget is a promise, undoes it (:func:`release_freed_memory`:
with a 24 MB budget the kept memory grew a job's peak by 63 MB instead of < 40). ``LIVEDENOISE_MALLOC=system``
leaves ``malloc`` as it is; on systems without glibc (macOS, Windows, musl) nothing changes.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
import threading

from livedenoise.errors import ConfigError

log = logging.getLogger(__name__)

#: The environment variable that chooses: ``keep`` (the default) or ``system`` (malloc's own settings).
ENV = "LIVEDENOISE_MALLOC"
CHOICES = ("keep", "system")

# glibc's mallopt parameters (malloc.h) and their defaults (what release_freed_memory restores)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
#: Free memory at the top of the heap beyond this is returned to the OS (the largest value mallopt takes).
TRIM_THRESHOLD = 2**31 - 1

_lock = threading.Lock()
_state: str | None = None  # "kept", "system", "unsupported" or "released" once decided (the setting is per process)


def _glibc() -> ctypes.CDLL | None:
    """The C library, where it is glibc (the only one whose ``mallopt`` this module knows)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def requested() -> str:
    """The choice in :data:`ENV` (``keep`` when unset); a :class:`ConfigError` names any other value."""
    choice = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if choice not in CHOICES:
        raise ConfigError(f"{ENV}={os.environ.get(ENV)!r} is invalid; expected one of {', '.join(CHOICES)}.")
    return choice


def keep_freed_memory() -> bool:
    """Make this process keep freed memory for reuse (once; later calls only report). True where it does.

    Called by every CPU path that runs a network (:class:`~livedenoise.inference.Denoiser`,
    :func:`livedenoise.training.loop.fit`); calling it yourself first is harmless.
    """
    global _state
    with _lock:
        if _state is None:
            _state = _apply(requested())
        return _state == "kept"


def release_freed_memory(reason: str) -> None:
    """Give malloc its own settings back and return what it kept to the OS; later :func:`keep_freed_memory` calls
    in this process keep nothing. For work that promises a memory budget (a batch job; ``reason`` says which)."""
    global _state
    with _lock:
        if _state == "kept":
            libc = _glibc()
            assert libc is not None  # it was kept with glibc's mallopt
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
            log.info("CPU memory: freed blocks returned to the system again (%s).", reason)
        if _state in (None, "kept"):
            _state = "released"


def state() -> str | None:
    """What this process does: ``kept``, ``system``, ``unsupported``, ``released`` (:func:`release_freed_memory`),
    or None (not decided yet)."""
    return _state


def _apply(choice: str) -> str:
    if choice == "system":
        log.info("CPU memory: malloc left as it is (%s=system).", ENV)
        return "system"
    libc = _glibc()
    if libc is None:
        log.debug("CPU memory: not glibc (%s), malloc left as it is.", platform.libc_ver()[0] or sys.platform)
        return "unsupported"
    if libc.mallopt(_M_MMAP_MAX, 0) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        log.info("CPU memory: glibc refused the malloc settings; left as it is.")
        return "unsupported"
    log.info("CPU memory: freed blocks are kept for reuse (faster passes, peak memory stays resident; "
             "%s=system to turn off).", ENV)
    return "kept"
