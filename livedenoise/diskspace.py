"""Before writing anything big: is the output folder writable, and does it have room?

Why a module of its own: ``denoise`` (outputs sized from the inputs), ``simulate`` (frames x field of
view) and the live session all write data whose size is known in advance. Without the check an
unwritable ``-o`` surfaced as a traceback after the model had loaded, and a full disk hung the
acquisition's saving thread with the raw dataset never closed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from livedenoise.errors import LivedenoiseError

#: Room kept beyond the data's own size (metadata, indexes, resume records, the file system's needs).
SPACE_MARGIN = 1.05


def format_bytes(n: float) -> str:
    """``1.2 GB`` style (decimal units, as disk tools show)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def ensure_room(folder: Path, need_bytes: int, what: str = "The outputs") -> None:
    """Check that ``folder`` can be created and written, and that ``need_bytes`` (plus a margin) fit there.

    Writes nothing that stays and creates nothing: an existing folder gets a write test (a temporary file,
    removed at once), a folder still to be created is checked on its nearest existing parent, so a command
    that fails later (a bad model, say) leaves no empty output folder behind. Raises
    :class:`LivedenoiseError` with one sentence naming the folder.
    """
    folder = Path(folder)
    blocking = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise LivedenoiseError(f"Cannot write to the output folder {folder}: {blocking} is a file, not a folder; "
                               "choose another path with -o.")
    existing = next((p for p in [folder, *folder.parents] if p.is_dir()), Path.cwd())
    try:
        if existing == folder:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".livedenoise-write-test-"):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(existing))
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else ""
        raise LivedenoiseError(f"Cannot write to the output folder {folder} ({exc.strerror or exc}{where}); choose a "
                               "writable folder with -o.") from None
    if need_bytes * SPACE_MARGIN > free:
        raise LivedenoiseError(f"{what} need about {format_bytes(need_bytes * SPACE_MARGIN)} but {folder} has only "
                               f"{format_bytes(free)} free; free some space or choose another folder with -o.")
