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

def _has_mallinfo2() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


# the probes read glibc's mallinfo2 (glibc >= 2.33)
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc" and _has_mallinfo2()

#: A child script's resident memory in MB, read from /proc (Linux).
_RSS_MB = """
def rss_mb():
    import os
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
"""

# mallinfo2 (glibc >= 2.33): hblkhd is the memory malloc holds in mmap'd blocks; mapped_mb is what the 64 MB
# tensor added to it
_PROBE = _RSS_MB + r"""
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
elif sys.argv[1] == "return":  # a batch job's block: freed memory kept while it runs, handed back after it
    assert cpu_memory.keep_freed_memory()
    start = rss_mb()
    block = torch.ones(32 * 2**20)  # 128 MB, touched
    del block
    kept = rss_mb() - start
    handed_back = cpu_memory.return_freed_memory()
    after = rss_mb() - start
else:
    cpu_memory.keep_freed_memory()
def mapped_by(n_floats):
    before = libc.mallinfo2().hblkhd
    block = torch.ones(n_floats)
    return (libc.mallinfo2().hblkhd - before) / 2**20, float(block[:10].sum())
mapped, total = mapped_by(16 * 2**20)  # 64 MB
small = [mapped_by(4 * 2**20)[0] for _ in range(3)]  # 16 MB, three times
out = {"state": cpu_memory.state(), "mapped_mb": mapped, "sum": total, "small_mb": small}
if sys.argv[1] == "return":
    out.update(kept_mb=kept, after_mb=after, handed_back=handed_back)
print("@@" + json.dumps(out))
"""


def _probe(how: str, malloc: str | None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != cpu_memory.ENV and k not in cpu_memory.USER_SETTINGS}
    if malloc is not None:
        env[cpu_memory.ENV] = malloc
    env.update(extra)
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
    assert kept["small_mb"] == [0.0, 0.0, 0.0]


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_opt_out_leaves_malloc_as_it_was() -> None:
    system = _probe("direct", "system")
    assert system["state"] == "system"
    assert system["mapped_mb"] >= 64.0  # malloc's own behaviour: a block this large is mmap'd (and unmapped on free)


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_malloc_settings_of_your_own_are_left_alone() -> None:
    mine = _probe("direct", None, MALLOC_ARENA_MAX="2")
    assert mine["state"] == "user"
    assert mine["mapped_mb"] >= 64.0


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_a_cpu_denoiser_applies_it() -> None:
    assert _probe("denoiser", None)["state"] == "kept"
    assert _probe("denoiser", "SYSTEM")["state"] == "system"  # case-insensitive


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_freed_memory_is_handed_back_on_request_and_kept_again_afterwards() -> None:
    res = _probe("return", None)
    assert res["kept_mb"] >= 100.0  # the freed 128 MB tensor stayed in the process
    assert res["handed_back"] is True
    assert res["after_mb"] < 30.0  # ... until it was handed back
    assert res["state"] == "kept"
    assert res["mapped_mb"] < 1.0 and res["small_mb"] == [0.0, 0.0, 0.0]  # later blocks still come from the heap


def test_nothing_is_handed_back_where_nothing_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_memory, "_state", "system")
    assert cpu_memory.return_freed_memory() is False


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_a_batch_job_hands_back_what_an_earlier_pass_kept(tmp_path: Path) -> None:
    """A batch job keeps freed memory within a block and hands it back after each: a process that ran a large frame
    before (a live session, a notebook) ends the job holding far less than that pass's peak."""
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "in.tif", (np.random.default_rng(0).poisson(20, (2, 64, 64)) + 100).astype(np.uint16))
    script = (_RSS_MB + "import numpy as np\nfrom livedenoise.inference import Denoiser\n"
              "from livedenoise import cpu_memory\nfrom livedenoise.batch import denoise_dataset\n"
              "Denoiser('fast', device='cpu').denoise(np.full((1024, 1024), 120.0, np.float32))\n"
              "before = rss_mb()\n"
              f"denoise_dataset([{str(tmp_path / 'in.tif')!r}], {str(tmp_path / 'out')!r}, model='fast', "
              "progress=False, device='cpu')\nprint('@@', cpu_memory.state(), before, rss_mb())")
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, text=True, capture_output=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != cpu_memory.ENV})
    assert res.returncode == 0, res.stderr[-2000:]
    state, before, after = res.stdout.strip().splitlines()[-1].split()[1:]
    assert state == "kept"
    assert float(after) < float(before) - 150.0, (before, after)  # a 1024² pass keeps ~500 MB; the job hands it back
    assert (tmp_path / "out" / "in.ome.tif").is_file()


def test_invalid_choice_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_memory.ENV, "jemalloc")
    with pytest.raises(ConfigError, match=r"LIVEDENOISE_MALLOC='jemalloc' is invalid; expected one of keep, system"):
        cpu_memory.requested()
    monkeypatch.setenv(cpu_memory.ENV, "")
    assert cpu_memory.requested() == "keep"


@pytest.mark.skipif(not GLIBC, reason="the setting exists for glibc only")
def test_in_a_worker_thread_large_blocks_are_kept_too() -> None:
    """A live session runs the network in worker threads. A thread with an arena of its own would get every block
    above 64 MB (a 2048² frame's activations) mapped afresh; sharing the main arena keeps them."""
    script = _PROBE.replace("mapped, total = mapped_by(16 * 2**20)  # 64 MB", "import threading\n"
                            "got = []\nthread = threading.Thread(target=lambda: got.append([mapped_by(32 * 2**20)[0] "
                            "for _ in range(3)]))\nthread.start(); thread.join()\nmapped, total = max(got[0]), 10.0")
    env = {k: v for k, v in os.environ.items() if k != cpu_memory.ENV and k not in cpu_memory.USER_SETTINGS}
    outs = {}
    for choice in ("keep", "system"):
        res = subprocess.run([sys.executable, "-c", script, "direct"], env={**env, cpu_memory.ENV: choice}, cwd=ROOT,
                             text=True, capture_output=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        outs[choice] = json.loads(next(line[2:] for line in res.stdout.splitlines() if line.startswith("@@")))
    assert outs["keep"]["state"] == "kept" and outs["keep"]["mapped_mb"] == 0.0  # 128 MB blocks from the heap
    assert outs["system"]["mapped_mb"] >= 128.0  # what a worker thread gets from malloc as it is
