"""The progress bar of a batch job (rich): one bar per input, blocks, frames, Mpx/s and ETA."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from livedenoise.batch.block import BlockResult

if TYPE_CHECKING:
    from livedenoise.batch.job import _Item



def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class _Progress:
    """rich progress: one bar per input, blocks done / total, frames, Mpx/s and ETA."""

    def __init__(self, console: Any, items: list[_Item]) -> None:
        self.console = console
        self.items = items
        self.progress: Any = None
        self.tasks: dict[int, Any] = {}
        self.pixels: dict[int, int] = {}
        self.t0: dict[int, float] = {}

    def __enter__(self) -> _Progress:
        if self.console is None:
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("blocks"),
            TextColumn("{task.fields[frames]} frames"), TextColumn("{task.fields[rate]} Mpx/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
        )
        self.progress.__enter__()
        return self

    def start_item(self, n: int, already: int) -> None:
        if self.progress is None:
            return
        it = self.items[n]
        assert it.plan is not None
        name = it.item.path.name
        self.tasks[n] = self.progress.add_task(name if len(name) < 40 else "..." + name[-37:], total=it.plan.n_blocks,
                                               completed=already, frames=0, rate="-")
        self.pixels[n] = 0
        self.t0[n] = time.perf_counter()

    def advance(self, n: int, result: BlockResult) -> None:
        if self.progress is None:
            return
        self.pixels[n] += result.pixels
        rate = self.pixels[n] / 1e6 / max(1e-9, time.perf_counter() - self.t0[n])
        frames = self.items[n].summary.frames if self.items[n].summary else 0
        self.progress.update(self.tasks[n], advance=1, frames=frames, rate=f"{rate:.2f}")

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

