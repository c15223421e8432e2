"""What a batch job shows while it runs: one bar per input (blocks done, frames, Mpx/s), drawn by
:mod:`livedenoise.progress` from the blocks the job reports as they finish."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from livedenoise.batch.block import BlockResult

if TYPE_CHECKING:
    from livedenoise.batch.job import _Item
    from livedenoise.progress import ProgressBars


class _Progress:
    """The job's display, or nothing (``show=False``): fed with each input's start and each finished block."""

    def __init__(self, show: bool, items: list[_Item], out: Any = None) -> None:
        self.show = show
        self.out = out
        self.items = items
        self.bars: ProgressBars | None = None
        self.tasks: dict[int, int] = {}
        self.pixels: dict[int, int] = {}
        self.t0: dict[int, float] = {}

    def __enter__(self) -> _Progress:
        if self.show:
            from livedenoise.progress import ProgressBars

            self.bars = ProgressBars(out=self.out).__enter__()
        return self

    def start_item(self, n: int, already: int) -> None:
        if self.bars is None:
            return
        it = self.items[n]
        assert it.plan is not None
        self.tasks[n] = self.bars.add(it.item.path.name, it.plan.n_blocks, completed=already,
                                      info=f"{already}/{it.plan.n_blocks} blocks")
        self.pixels[n] = 0
        self.t0[n] = time.perf_counter()

    def advance(self, n: int, result: BlockResult) -> None:
        if self.bars is None:
            return
        self.pixels[n] += result.pixels
        rate = self.pixels[n] / 1e6 / max(1e-9, time.perf_counter() - self.t0[n])
        it = self.items[n]
        frames = it.summary.frames if it.summary else 0
        self.bars.update(self.tasks[n], advance=1, info=f"{frames} frames, {rate:.2f} Mpx/s")

    def __exit__(self, *exc: Any) -> None:
        if self.bars is not None:
            self.bars.__exit__(*exc)
