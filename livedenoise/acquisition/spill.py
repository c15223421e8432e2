"""Frames a recorder cannot keep in memory, parked on disk until their turn.

A recorder that falls behind the camera must neither lose frames nor grow without bound. Where the acquisition can
read its own saved frames back (a live session, the pycromanager attachment: ``read_raw``), frames past the memory
bound are simply read back later. Where it cannot (a pymmcore-plus MDA handler: pymmcore-plus's own writer has the
raw data), the recorder parks them here: one ``.npy`` file per frame in a hidden folder beside the denoised dataset,
each removed once its frame is written and the folder when the recorder has finished (a process that crashes leaves
it: delete it by hand). ``.npy`` because it is written and read back at disk speed with its dtype and shape, and
holds nothing that runs code when loaded (``allow_pickle=False``). Memory then stays bounded as long as the disk
takes the frames as fast as the camera makes them; where it refuses them (full, gone, or too little room left for
the raw data), they wait in memory, as before.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
import weakref
from collections.abc import Hashable
from pathlib import Path

import numpy as np

log = logging.getLogger("livedenoise")

#: Prefix of the folder a :class:`SpillStore` creates; the rest of its name is unique per store.
SPILL_PREFIX = ".livedenoise-spill-"
#: The stores of this process (their folders are not "left by an earlier recorder").
_STORES: weakref.WeakSet[SpillStore] = weakref.WeakSet()
#: A frame is parked only where at least this much disk stays free after it: that room belongs to the raw data and
#: the denoised dataset, which often share the disk. Below it, frames wait in memory.
KEEP_FREE_BYTES = 1024**3


def _say_what_was_left(directory: Path) -> None:
    """Warn about parking folders in ``directory`` that no store of this process made: a recorder that crashed (or
    another process recording into the same folder) left them. Never removed here: one may still be in use."""
    ours = {s.path for s in _STORES if s.path is not None}
    left = sorted(p for p in directory.glob(f"{SPILL_PREFIX}*") if p.is_dir() and p not in ours)
    if left:
        size = sum(f.stat().st_size for p in left for f in p.glob("*") if f.is_file())
        log.warning("denoised writer: %d parking folder(s) left in %s by an earlier recorder that did not finish "
                    "(%s, %.1f MB); delete them once no acquisition records into this folder", len(left), directory,
                    ", ".join(p.name for p in left), size / 1e6)


def _write(path: Path, frame: np.ndarray) -> None:
    """One frame as ``.npy`` (the disk write itself)."""
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(frame), allow_pickle=False)


class SpillStore:
    """Frames kept on disk by key until taken: ``put`` (False when the disk refuses: keep the frame in memory),
    ``get``, ``drop`` and ``close`` (removes every file this store wrote, and its folder).

    The folder is created in ``directory`` on the first ``put``, named :data:`SPILL_PREFIX` + a random suffix, so
    two recorders never share one and nothing but this store's own files is ever removed. Frames are written, read
    and removed outside the store's lock (only the folder's creation, once, holds it), so a slow disk delays only the
    thread that waits for it.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path: Path | None = None
        self._files: dict[Hashable, Path] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._warned = False
        _STORES.add(self)

    def _refuse(self, why: str) -> bool:
        if not self._warned:
            self._warned = True
            log.warning("denoised writer: could not park frames on disk in %s (%s); the frames waiting stay in "
                        "memory until it can", self.directory, why)
        return False

    def put(self, key: Hashable, frame: np.ndarray) -> bool:
        """Park ``frame`` under ``key``; False (with one warning per store) when it could not be written, or when the
        disk would keep less than :data:`KEEP_FREE_BYTES` free."""
        try:
            with self._lock:
                if self.path is None:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    _say_what_was_left(self.directory)
                    path = self.directory / f"{SPILL_PREFIX}{uuid.uuid4().hex[:12]}"
                    path.mkdir()
                    self.path = path
                folder, index = self.path, self._count
                self._count += 1
            free = shutil.disk_usage(folder).free
            if free - frame.nbytes < KEEP_FREE_BYTES:
                return self._refuse(f"{free / 1e9:.1f} GB free: that room is kept for the raw data")
            target = folder / f"{index}.npy"
            partial = target.with_suffix(".partial")
            try:
                _write(partial, frame)
                os.replace(partial, target)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        except Exception as exc:  # a full or vanished disk, or anything else: the frame stays in memory
            return self._refuse(f"{exc.__class__.__name__}: {exc}")
        with self._lock:
            self._files[key] = target
        return True

    def get(self, key: Hashable) -> np.ndarray:
        """The frame parked under ``key`` (it stays parked until :meth:`drop`)."""
        with self._lock:
            path = self._files.get(key)
        if path is None:
            raise KeyError(f"no frame parked under {key!r}")
        return np.load(path, allow_pickle=False)

    def drop(self, key: Hashable) -> None:
        """Remove the file of ``key``'s frame (written, or no longer needed)."""
        with self._lock:
            path = self._files.pop(key, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    def close(self) -> None:
        """Remove every file this store wrote and its folder (only those)."""
        with self._lock:
            files, self._files = list(self._files.values()), {}
            path = self.path
        for f in files:
            f.unlink(missing_ok=True)
        if path is not None and path.exists():
            try:
                path.rmdir()
            except OSError:  # something else was put there: leave it, say where
                log.warning("denoised writer: %s is not empty and was left in place", path)
