"""Frames a recorder cannot keep in memory, parked on disk until their turn.

A recorder that falls behind the camera must neither lose frames nor grow without bound. Where the acquisition can
read its own saved frames back (a live session, the pycromanager attachment: ``read_raw``), frames past the memory
bound are simply read back later. Where it cannot (a pymmcore-plus MDA handler: pymmcore-plus's own writer has the
raw data), the recorder parks them here: one ``.npy`` file per frame in a hidden folder beside the denoised dataset,
each removed once its frame is written and the folder when the recorder closes. ``.npy`` because it is written and
read back at disk speed with its dtype and shape, and holds nothing that runs code when loaded
(``allow_pickle=False``).
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

import numpy as np

log = logging.getLogger("livedenoise")

#: Prefix of the folder a :class:`SpillStore` creates; the rest of its name is unique per store.
SPILL_PREFIX = ".livedenoise-spill-"


class SpillStore:
    """Frames kept on disk by key until taken: ``put`` (False when the disk refuses: keep the frame in memory),
    ``get``, ``drop`` and ``close`` (removes every file this store wrote, and its folder).

    The folder is created in ``directory`` on the first ``put``, named :data:`SPILL_PREFIX` + a random suffix, so
    two recorders never share one and nothing but this store's own files is ever removed.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path: Path | None = None
        self._files: dict[tuple, Path] = {}
        self._lock = threading.Lock()
        self._count = 0
        self.bytes_written = 0
        self._refused = False

    def put(self, key: tuple, frame: np.ndarray) -> bool:
        """Park ``frame`` under ``key``; False (with one warning per store) when it could not be written."""
        with self._lock:
            try:
                if self.path is None:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    path = self.directory / f"{SPILL_PREFIX}{uuid.uuid4().hex[:12]}"
                    path.mkdir()
                    self.path = path
                target = self.path / f"{self._count}.npy"
                self._count += 1
                partial = target.with_suffix(".partial")
                with open(partial, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(frame), allow_pickle=False)
                os.replace(partial, target)
            except OSError as exc:
                if not self._refused:
                    self._refused = True
                    log.warning("denoised writer: could not park frames on disk in %s (%s: %s); the frames waiting "
                                "stay in memory", self.directory, exc.__class__.__name__, exc)
                return False
            self._files[key] = target
            self.bytes_written += int(frame.nbytes)
            return True

    def get(self, key: tuple) -> np.ndarray:
        """The frame parked under ``key`` (it stays parked until :meth:`drop`)."""
        with self._lock:
            path = self._files.get(key)
        if path is None:
            raise KeyError(f"no frame parked for {dict(key)}")
        return np.load(path, allow_pickle=False)

    def drop(self, key: tuple) -> None:
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
            for partial in path.glob("*.partial"):  # a write interrupted by a full disk
                partial.unlink(missing_ok=True)
            try:
                path.rmdir()
            except OSError:  # something else was put there: leave it, say where
                log.warning("denoised writer: %s is not empty and was left in place", path)
