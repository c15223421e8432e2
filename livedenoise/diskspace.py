"""Before writing anything big: is the output folder writable, and does it have room?

Why a module of its own: ``denoise`` (outputs sized from the inputs), ``simulate`` (frames x field of
view) and the live session all write data whose size is known in advance. Without the check an
unwritable ``-o`` surfaced as a traceback after the model had loaded, and a full disk hung the
acquisition's saving thread with the raw dataset never closed.
"""
from __future__ import annotations

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
    """Create ``folder``, check a file can be written in it and that ``need_bytes`` (plus a margin) fit.

    Raises :class:`LivedenoiseError` with one sentence naming the folder; writes nothing that stays.
    """
    blocking = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise LivedenoiseError(f"Cannot write to the output folder {folder}: {blocking} is a file, not a folder; "
                               "choose another path with -o.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".livedenoise-write-test-"):
            pass
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise LivedenoiseError(f"Cannot write to the output folder {folder} ({exc.strerror or exc}); choose a "
                               "writable folder with -o.") from None
    if need_bytes * SPACE_MARGIN > free:
        raise LivedenoiseError(f"{what} need about {format_bytes(need_bytes * SPACE_MARGIN)} but {folder} has only "
                               f"{format_bytes(free)} free; free some space or choose another folder with -o.")
