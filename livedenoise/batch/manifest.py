"""The resume marker: what a job was, which blocks are done (appended after their pixels are synced)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from livedenoise.batch.block import BlockResult
from livedenoise.errors import LivedenoiseError
from livedenoise.io import (
    remove_path,
)
from livedenoise.io.omezarr import forget_open_arrays

MANIFEST_VERSION = 2  # 2: OME-TIFF outputs are written under .livedenoise/<stem>.partial.ome.tif, renamed when complete
STATE_DIR = ".livedenoise"


class Manifest:
    """``<out>/.livedenoise/<name>.json`` (what the run is) + ``<name>.done.jsonl`` (which blocks are finished)."""

    def __init__(self, out_dir: Path, stem: str) -> None:
        base = out_dir / STATE_DIR / stem
        self.path = base.with_name(base.name + ".json")
        self.log_path = base.with_name(base.name + ".done.jsonl")
        self.staging = base.with_name(base.name + ".blocks")
        self.assembling = base.with_name(base.name + ".assembling")
        #: the OME-TIFF (or OME-Zarr) being written: only a complete output ever carries the output's name
        self.partial = base.with_name(base.name + ".partial.ome.tif")
        self.partial_zarr = base.with_name(base.name + ".partial.ome.zarr")
        self.data: dict[str, Any] = {}

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict[str, Any]:
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LivedenoiseError(
                f"{self.path}: the resume record is unreadable ({exc}); start again with --overwrite.") from None
        if self.data.get("manifest_version") != MANIFEST_VERSION:
            raise LivedenoiseError(
                f"{self.path}: resume record of another livedenoise version; start again with --overwrite.")
        return self.data

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def done(self) -> dict[int, dict[str, Any]]:
        """Finished blocks (a torn last line from a crash is ignored)."""
        out: dict[int, dict[str, Any]] = {}
        if not self.log_path.is_file():
            return out
        for line in self.log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
                out[int(rec["block"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        return out

    def record(self, result: BlockResult) -> None:
        line = json.dumps({"block": result.index, "frames": result.frames, "clipped": result.clipped,
                           "seconds": round(result.seconds, 4), **({"check": result.check} if result.check else {}),
                           **({"input": result.input_digest} if result.input_digest else {})})
        with open(self.log_path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        forget_open_arrays(self.partial_zarr)
        for p in (self.path, self.log_path, self.staging, self.assembling, self.partial, self.partial_zarr):
            remove_path(p)
