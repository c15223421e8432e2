"""The CPU allocator setting (livedenoise.cpu_memory): freed memory kept for reuse, per process, with an opt-out.

The setting is process-wide, so each check runs in a child process."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from livedenoise import cpu_memory
from livedenoise.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# mallinfo2 (glibc >= 2.33): hblkhd is the memory malloc holds in mmap'd blocks; mapped_mb is what the 64 MB
# tensor added to it
_PROBE = r"""
import ctypes, json, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
import torch
from livedenoise import cpu_memory
if sys.argv[1] == "denoiser":
    from livedenoise.inference import Denoiser
    Denoiser("fast", device="cpu")
else:
    cpu_memory.keep_freed_memory()
before = libc.mallinfo2().hblkhd
big = torch.ones(16 * 2**20)  # 64 MB
mapped = libc.mallinfo2().hblkhd - before
print("@@" + json.dumps({"state": cpu_memory.state(), "mapped_mb": mapped / 2**20, "sum": float(big[:10].sum())}))
"""


def _probe(how: str, malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != cpu_memory.ENV}
    if malloc is not None:
        env[cpu_memory.ENV] = malloc
    res = subprocess.run([sys.executable, "-c", _PROBE, how], env=env, cwd=ROOT, text=True, capture_output=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(next(line[2:] for line in res.stdout.splitlines() if line.startswith("@@")))


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_default_keeps_large_blocks_off_mmap() -> None:
    kept = _probe("direct", None)
    assert kept["state"] == "kept"
    assert kept["mapped_mb"] < 1.0  # the 64 MB tensor came from the heap, whose freed memory stays in the process
    assert kept["sum"] == 10.0


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_opt_out_leaves_malloc_as_it_was() -> None:
    system = _probe("direct", "system")
    assert system["state"] == "system"
    assert system["mapped_mb"] >= 64.0  # malloc's own behaviour: a block this large is mmap'd (and unmapped on free)


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_a_cpu_denoiser_applies_it() -> None:
    assert _probe("denoiser", None)["state"] == "kept"
    assert _probe("denoiser", "SYSTEM")["state"] == "system"  # case-insensitive


def test_invalid_choice_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_memory.ENV, "jemalloc")
    with pytest.raises(ConfigError, match=r"LIVEDENOISE_MALLOC='jemalloc' is invalid; expected one of keep, system"):
        cpu_memory.requested()
    monkeypatch.setenv(cpu_memory.ENV, "")
    assert cpu_memory.requested() == "keep"
