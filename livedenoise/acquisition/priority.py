"""Work of a live session that can wait yields the CPU to the work that cannot.

On a 2-core computer the camera's acquisition, the display's denoising and the recording of every denoised frame
compete for the cores. The display must keep up with the camera (the user is looking at it); the recording
need not: it queues frames, re-reads spilled ones from the raw dataset and catches up when the acquisition ends
(:class:`~livedenoise.acquisition.recorder.DenoisedWriter`). So the recorder's thread runs at a lower scheduling
priority: when the cores are free it runs as fast as before, and when they are not, the display gets them first.
Measured with ``livedenoise demo`` at 512² and 20 frames/s (README, "What livedenoise guarantees").

The background fine-tune keeps its normal priority (at a lower one it ran far fewer steps in its budget) but waits
between its steps while the display is denoising a frame (:class:`YieldToDisplay`), up to a share of its time.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("livedenoise")

#: The share of its frames a display may skip in a window while the fine-tune waits for it before the window counts
#: against it (two such windows in a row and the fine-tune stops waiting: :class:`YieldToDisplay`). 0.3 since
#: 2026-12-06, 0.2 before: a one-pass temporal display at 512² (bf16, Intel Xeon with AMX) skipped 8-19 % of the
#: camera's frames while the fine-tune waited for it, and at 0.2 its fine-tune stopped waiting in 4 of 12
#: sessions, after which the display showed 6.5-7.8 instead of 8.1-9.2 frames/s; the case the rule was made for
#: (``fast`` in bf16 at 512² and 20 frames/s, too slow for the camera whatever the fine-tune does) skipped 35-40 %.
GIVE_UP_SKIPPED = 0.3

#: How much nicer (Linux ``nice`` steps, 0..19) a background thread makes itself: at 10, the kernel gives a busy
#: normal-priority thread about nine times its share of a contended core.
BACKGROUND_NICENESS = 10


def lower_this_thread_priority(what: str) -> bool:
    """Make the calling thread (and the threads it starts later) yield the CPU to normal-priority threads.

    Linux only, where each thread has its own niceness; raising one's niceness needs no privileges. Elsewhere
    nothing changes. ``what`` names the thread in the log. True where the priority was lowered."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICENESS)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (AttributeError, OSError) as exc:  # a sandbox that forbids it: run at the normal priority
        log.debug("%s keeps its priority (%s)", what, exc)
        return False
    log.debug("%s runs at nice %d (the display and the acquisition come first)", what, nice)
    return True


class _Stats(Protocol):
    submitted: int
    skipped_busy: int
    ways: int


class _Display(Protocol):
    @property
    def running(self) -> bool: ...

    @property
    def stats(self) -> _Stats: ...

    def wait_while_busy(self, max_wait_s: float) -> float: ...


class YieldToDisplay:
    """A fine-tune's ``pause`` hook (:func:`~livedenoise.training.loop.fit`): before each step, wait while the live
    display is denoising a frame (or handing its result on), so that the frame has the cores to itself (but for the
    acquisition).

    Why: on 2 cores a fine-tune step and the display's denoising ran side by side, and while the fine-tune ran the
    display skipped frames (`lite` in bf16 at 512² and 20 frames/s, Intel Xeon: 18.1 frames/s shown while
    fine-tuning; 19.9 with the waits). Between frames the fine-tune does not wait. ``share`` caps the waits at that
    share of the time since the display was first seen, so a display that is never idle slows the fine-tune at most
    by 1 / (1 - share) and cannot stop it; ``max_wait_s`` bounds each wait, and waits shorter than ``MIN_WAIT_S``
    are not started. ``display`` returns the session's display worker, or None before live imaging has started.

    A display too slow for the camera whatever the fine-tune does gains little from the waits, and the fine-tune
    loses steps (``fast`` in bf16 at 512² and 20 frames/s: 12.1-12.9 instead of 10.2-10.5 frames/s shown, the
    fine-tune out of its 45 s after 327-343 steps instead of early-stopping after 540). So the display's frames are
    counted in windows of ``trial_s`` (of at least ``MIN_TRIAL_FRAMES`` frames): after two windows in a row in which
    it skipped more than ``give_up_skipped`` of them despite the waits, the fine-tune stops waiting for good
    (:attr:`gave_up`, logged). A new display worker starts a new count, and so does a display that changed its way
    of denoising (``WorkerStats.ways``: an adaptive temporal display that went to one pass has a new pace; the frames it
    skipped in two passes are no verdict on it).
    """

    #: Waits shorter than this are not started (a share nearly spent would otherwise spin on tiny waits).
    MIN_WAIT_S = 0.001
    #: A window counts only with at least this many frames (at 1 frame/s one skipped frame is not a verdict).
    MIN_TRIAL_FRAMES = 20

    def __init__(self, display: Callable[[], _Display | None], share: float, max_wait_s: float = 0.25,
                 trial_s: float = 5.0, give_up_skipped: float = GIVE_UP_SKIPPED) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share {share} is invalid; expected a fraction from 0 up to (not including) 1")
        self._display = display
        self.share = share
        self.max_wait_s = max_wait_s
        self.trial_s = trial_s
        self.give_up_skipped = give_up_skipped
        self.paused_s = 0.0
        self.gave_up = False
        self._start: float | None = None  # when a display was first seen: the share counts from then
        #: the current window: the display and its way (``stats.ways``), its start, the display's counts then
        self._trial: tuple[object, int, float, int, int] | None = None
        self._bad_windows = 0
        #: the share of its frames the display skipped in each window judged, in order (the report's record of why
        #: the fine-tune kept waiting or stopped)
        self.skipped_shares: list[float] = []

    def _keeps_up(self, display: _Display, now: float) -> bool:
        """False once the display skipped more than ``give_up_skipped`` of its frames in two windows in a row."""
        if self.gave_up:
            return False
        ways = display.stats.ways
        if self._trial is None or self._trial[0] is not display or self._trial[1] != ways:
            # first seen, a new worker, or a new way of denoising: a new count
            self._trial = (display, ways, now, display.stats.submitted, display.stats.skipped_busy)
            self._bad_windows = 0
            return True
        _, _, since, submitted, skipped = self._trial
        frames = display.stats.submitted - submitted
        if now - since < self.trial_s or frames < self.MIN_TRIAL_FRAMES:
            return True
        share = (display.stats.skipped_busy - skipped) / frames
        self.skipped_shares.append(share)
        self._bad_windows = self._bad_windows + 1 if share > self.give_up_skipped else 0
        self._trial = (display, ways, now, display.stats.submitted, display.stats.skipped_busy)  # the next window
        if self._bad_windows >= 2:
            self.gave_up = True
            log.info("the display skipped %.0f %% of %d frames in %.0f s although the fine-tune waited for it, twice "
                     "in a row: the fine-tune stops waiting (the model is too slow for the camera)", 100 * share,
                     frames, now - since)
            return False
        return True

    def allowed_s(self, now: float) -> float:
        """The longest wait now that keeps the waits within ``share`` of the time since the display was first seen."""
        elapsed = now - (self._start if self._start is not None else now)
        # (paused + w) <= share * (elapsed + w)  <=>  w <= (share * elapsed - paused) / (1 - share)
        return max(0.0, min(self.max_wait_s, (self.share * elapsed - self.paused_s) / (1.0 - self.share)))

    def __call__(self) -> float:
        now = time.perf_counter()
        display = self._display()
        if display is None or not display.running or self.share <= 0:
            return 0.0
        if self._start is None:
            self._start = now
        if not self._keeps_up(display, now):
            return 0.0
        allowed = self.allowed_s(now)
        if allowed < self.MIN_WAIT_S:
            return 0.0
        waited = display.wait_while_busy(allowed)
        self.paused_s += waited
        return waited
