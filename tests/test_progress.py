"""The one progress display (livedenoise.progress): every command's bar is drawn there from the library's callbacks."""
from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from livedenoise.progress import ProgressBars, counting, fit_progress
from livedenoise.training.loop import FitProgress


def recording_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=160), buffer


def test_bars_show_description_percentage_and_detail():
    out, buffer = recording_console()
    with ProgressBars(out=out) as bars:
        task = bars.add("a-very-long-input-file-name-that-needs-shortening-0001.ome.tif", 4)
        bars.update(task, advance=3, info="12 frames, 1.50 Mpx/s")
    text = buffer.getvalue()
    assert "...me-that-needs-shortening-0001.ome.tif" in text and "a-very-long" not in text  # 40 characters
    assert "75%" in text and "12 frames, 1.50 Mpx/s" in text


def test_counting_and_fit_progress_feed_bars_from_library_callbacks(monkeypatch):
    import livedenoise.progress as progress

    consoles = []

    def recording() -> Console:
        console, buffer = recording_console()
        consoles.append(buffer)
        return console

    monkeypatch.setattr(progress, "console", recording)
    with counting("acquiring", 10, unit="frames") as update:
        update(4, 10)
    assert re.search(r"acquiring .* 40% 4/10 frames", consoles[-1].getvalue())
    with fit_progress("fine-tuning") as update_fit:
        update_fit(FitProgress(step=20, max_steps=40, train_loss=0.5, val_loss=0.25, best_val_loss=0.125,
                               elapsed_s=1.0, time_budget_s=None, improved=True))
    text = consoles[-1].getvalue()
    assert "fine-tuning" in text and "step 20  val 0.25  best 0.125" in text and "100%" in text


def test_no_module_draws_its_own_progress_bar():
    """rich.progress is used in livedenoise/progress.py only: every other bar goes through it."""
    root = Path(__file__).resolve().parent.parent / "livedenoise"
    users = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if "rich.progress" in p.read_text())
    assert users == ["progress.py"], users
