"""Keep the memory PyTorch frees on the CPU for reuse, instead of handing it back to the OS after every layer.

Why: glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, raised at most to 32 MiB) with
fresh pages from the kernel and gives them back on ``free``. A U-Net pass allocates and frees activations of
several MB to GB (a 512² frame's first level is 16 MB, a 2048² frame's 256 MB), so every frame paid page faults
and the kernel's zero-filling of new pages, over and over. Keeping freed blocks in the process
(``mallopt(M_MMAP_MAX, 0)`` and a 2 GiB trim threshold, what Intel's PyTorch tuning guide gets from jemalloc or
tcmalloc, without a preloaded library) made whole frames faster on the 2-core development CPU
(``benchmarks/bench_allocator.py``; README, "Speed on the CPU: freed memory kept for reuse").

Threads: glibc gives each thread that allocates an arena of its own, whose heaps hold at most 64 MB, and maps any
larger block afresh whatever the settings; a live session runs the network in worker threads, where a 2048² frame
then gained nothing. So threads share the main arena (``M_ARENA_MAX`` 1): in a probe, 2048² frames of the fast
backbone in a worker thread took 3.2 instead of 4.7 s (one torch thread), resident memory steady over 8 frames.
glibc fixes the arena limit when a process first makes a second arena, so threads that allocated before the first
Denoiser keep theirs.

The cost: the process keeps its peak working memory instead of returning it between frames, and freed blocks of
other sizes can leave the heap fragmented. A batch job, whose memory budget is a promise, keeps freed memory while it
denoises a block and hands it back to the OS after every block (:func:`return_freed_memory`, glibc's
``malloc_trim``), so what it holds does not grow from block to block (measured against malloc's own settings, which
map and unmap every large activation: ``benchmarks/bench_batch.py --malloc keep system``). ``LIVEDENOISE_MALLOC=system``
leaves ``malloc`` as it is, as do settings of your own (``MALLOC_*_`` variables, malloc tunables in
``GLIBC_TUNABLES``); on systems without glibc (macOS, Windows, musl) nothing changes.
"""
from __future__ import annotations

import ctypes
import functools
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
#: glibc's own malloc settings; when any is set, the user has chosen and livedenoise changes nothing.
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_ARENA_MAX")

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
#: Free memory at the top of the heap beyond this is returned to the OS (the largest value mallopt takes).
TRIM_THRESHOLD = 2**31 - 1
_lock = threading.Lock()
_state: str | None = None  # "kept", "system", "user" or "unsupported" (the setting is per process)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library, where it is glibc (the only one whose ``mallopt`` this module knows); loaded once, since a
    batch job asks for it after every block."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def requested() -> str:
    """The choice in :data:`ENV` (``keep`` when unset); a :class:`ConfigError` names any other value."""
    choice = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if choice not in CHOICES:
        raise ConfigError(f"{ENV}={os.environ.get(ENV)!r} is invalid; expected one of {', '.join(CHOICES)}.")
    return choice


def _user_settings() -> list[str]:
    """The malloc settings the user made in the environment (which livedenoise then leaves alone)."""
    found = [name for name in USER_SETTINGS if name in os.environ]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        found.append("GLIBC_TUNABLES")
    return found


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


def _set(libc: ctypes.CDLL, settings: tuple[tuple[int, int], ...]) -> bool:
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def _apply(choice: str) -> str:
    if choice == "system":
        log.info("CPU memory: malloc left as it is (%s=system).", ENV)
        return "system"
    user = _user_settings()
    if user:
        log.info("CPU memory: malloc left as you set it (%s).", ", ".join(user))
        return "user"
    libc = _glibc()
    if libc is None:
        log.debug("CPU memory: not glibc (%s), malloc left as it is.", platform.libc_ver()[0] or sys.platform)
        return "unsupported"
    if not _set(libc, ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, 1))):
        log.info("CPU memory: glibc refused the malloc settings; left as it is.")
        return "unsupported"
    log.info("CPU memory: freed blocks are kept for reuse (faster passes, peak memory stays resident; "
             "%s=system to turn off).", ENV)
    return "kept"


def return_freed_memory() -> bool:
    """Hand the freed memory this process keeps back to the OS now, and go on keeping what is freed later.

    A batch job calls this after every block, so between blocks it holds what it uses, not what its largest pass
    needed, and its memory budget holds; within a block the passes reuse freed memory. glibc's ``malloc_trim(0)``
    also returns free pages in the middle of the heap, so fragmentation does not accumulate from block to block.
    True where something was handed back (memory is kept, glibc)."""
    with _lock:
        if _state != "kept":
            return False
        libc = _glibc()
        assert libc is not None  # it was kept with glibc's mallopt
        libc.malloc_trim(0)
        return True


def state() -> str | None:
    """What this process does: ``kept``, ``system``, ``user`` (malloc settings of your own), ``unsupported``, or
    None (not decided yet)."""
    return _state
