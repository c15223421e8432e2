"""A rich progress bar driven by the fit loop's progress callbacks (pretrain, finetune, `denoise --adapt`).

In the library, not the CLI, because `denoise_dataset(adapt=...)` shows it too: the library never imports the CLI.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from livedenoise.training.loop import FitProgress


@contextmanager
def fit_progress(description: str) -> Iterator[Callable[[FitProgress], None]]:
    """Yield a callback that advances a rich progress bar showing loss and time."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=1.0, info="")

        def update(p: FitProgress) -> None:
            bar.update(task, completed=p.fraction,
                       info=f"step {p.step}  val {p.val_loss:.4g}  best {p.best_val_loss:.4g}")

        yield update
        bar.update(task, completed=1.0)
