"""The one progress display of livedenoise: rich bars on stderr, drawn from the callbacks the library reports through.

The library reports progress as plain callbacks and never draws by itself: a fit calls back with a
:class:`~livedenoise.training.loop.FitProgress`, an acquisition or an evaluation with ``(done, total)``, a batch job
with each finished block. Whoever wants to *see* that (the command line, or a Python user who passed
``progress=True``) draws it here, so every bar looks the same: what, the bar, the percentage, a detail, the time
elapsed and the time left.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from livedenoise.training.loop import FitProgress

#: Longest description shown before it is shortened from the left (file names keep their end).
MAX_DESCRIPTION = 40


def console() -> Console:
    """The console progress and status lines go to: stderr, so that stdout stays for results."""
    from rich.console import Console

    return Console(stderr=True)


def _short(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else "..." + text[-(MAX_DESCRIPTION - 3):]


class ProgressBars:
    """Several bars in one display (one per input of a batch job, or a single one). Use as a context manager.

    ``add(description, total)`` returns a task id; ``update(task, completed=, advance=, total=, info=)`` moves it.
    ``transient`` bars disappear when done (a catch-up at the end of a session), the others stay as a record.
    """

    def __init__(self, *, transient: bool = False, out: Console | None = None) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = out if out is not None else console()
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("left"),
                                  TimeRemainingColumn(), console=self.console, transient=transient)

    def __enter__(self) -> ProgressBars:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def add(self, description: str, total: float | None, *, completed: int = 0, info: str = "") -> int:
        return int(self._progress.add_task(_short(description), total=total, completed=completed, info=info))

    def update(self, task: int, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, info: str | None = None) -> None:
        fields: dict[str, Any] = {} if info is None else {"info": info}
        self._progress.update(task, completed=completed, advance=advance, total=total,  # type: ignore[arg-type]
                              **fields)


@contextmanager
def counting(description: str, total: float | None = None, *, transient: bool = False,
             unit: str = "") -> Iterator[Callable[[int, int], None]]:
    """One bar fed by a ``(done, total)`` callback: what acquisitions, evaluations and writers report."""
    with ProgressBars(transient=transient) as bars:
        task = bars.add(description, total)

        def update(done: int, total: int) -> None:
            bars.update(task, completed=done, total=total, info=f"{done}/{total}{' ' + unit if unit else ''}")

        yield update


@contextmanager
def fit_progress(description: str) -> Iterator[Callable[[FitProgress], None]]:
    """One bar fed by a fit's progress callback (pretrain, finetune, ``denoise --adapt``): step and losses."""
    with ProgressBars() as bars:
        task = bars.add(description, 1.0)

        def update(p: FitProgress) -> None:
            bars.update(task, completed=p.fraction,
                        info=f"step {p.step}  val {p.val_loss:.4g}  best {p.best_val_loss:.4g}")

        yield update
        bars.update(task, completed=1.0)
