"""The display comes first: a background fine-tune waits between its steps while the display denoises a frame."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from livedenoise.acquisition.display import DenoiseWorker, WorkerStats
from livedenoise.acquisition.priority import YieldToDisplay


def _slow_worker(seconds: float, started: threading.Event) -> DenoiseWorker:
    def denoise(frame, info):
        started.set()
        time.sleep(seconds)
        return frame

    return DenoiseWorker(denoise).start()


def test_a_worker_reports_waits_only_while_it_denoises():
    started = threading.Event()
    worker = _slow_worker(0.4, started)
    try:
        assert worker.wait_while_busy(1.0) == 0.0  # idle: returns at once, exactly 0
        worker.submit(np.zeros((4, 4), np.uint16))
        assert started.wait(5.0) and worker.busy
        waited = worker.wait_while_busy(5.0)
        assert 0.1 < waited < 3.0 and not worker.busy  # returned when the frame was done, not at the bound
        started.clear()
        worker.submit(np.zeros((4, 4), np.uint16))
        assert started.wait(5.0)
        assert 0.03 <= worker.wait_while_busy(0.05) < 0.3  # bounded by max_wait_s (0.4 s frame still running)
    finally:
        worker.stop()


def test_yield_to_display_waits_for_a_busy_display_within_its_share_and_not_for_an_idle_or_absent_one():
    class FakeDisplay:
        running = True

        def __init__(self):
            self.asked = []
            self.stats = WorkerStats()

        def wait_while_busy(self, max_wait_s):
            self.asked.append(max_wait_s)
            time.sleep(max_wait_s)  # never idle: every wait lasts as long as allowed
            return max_wait_s

    display = FakeDisplay()
    hook = YieldToDisplay(lambda: display, share=0.5, max_wait_s=0.1)
    assert hook() == 0.0  # first call: no time has passed, so the share allows no wait yet
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        hook()
        time.sleep(0.01)  # a "step"
    elapsed = time.perf_counter() - hook._start
    assert 0.25 * elapsed < hook.paused_s <= 0.5 * elapsed + 0.02  # waited, but never more than half the time
    assert max(display.asked) <= 0.1  # each wait bounded

    assert YieldToDisplay(lambda: None, share=0.5)() == 0.0  # live imaging not started: nothing to wait for
    spent = YieldToDisplay(lambda: display, share=0.5)
    spent()
    spent.paused_s = 10.0  # the share is spent: no wait is started, not even a tiny one
    asked = len(display.asked)
    assert spent() == 0.0 and len(display.asked) == asked
    display.running = False
    assert YieldToDisplay(lambda: display, share=0.5)() == 0.0
    off = YieldToDisplay(lambda: FakeDisplay(), share=0.0)
    off()
    time.sleep(0.05)
    assert off() == 0.0 and off.paused_s == 0.0  # share 0: the fine-tune never waits
    with pytest.raises(ValueError, match=r"share 1\.0 is invalid"):
        YieldToDisplay(lambda: None, share=1.0)


class _CountingDisplay:
    """A display that takes 3 frames during every wait asked of it, skipping them (all, or none) as told."""

    running = True

    def __init__(self, skip_every: int = 1):
        self.stats = WorkerStats()
        self.skip_every = skip_every  # 1: every frame skipped; 0: none

    def wait_while_busy(self, max_wait_s):
        for _ in range(3):
            self.stats.submitted += 1
            if self.skip_every and self.stats.submitted % self.skip_every == 0:
                self.stats.skipped_busy += 1
        return 0.001


def _run_hook(hook, steps, clock, before_step=lambda i: None):
    for i in range(steps):  # a fake clock: 10 ms per step, so windows of 0.1 s hold 30 frames
        before_step(i)
        hook()
        clock[0] += 0.01


def test_the_fine_tune_stops_waiting_for_a_display_that_skips_frames_even_so(monkeypatch):
    """A model too slow for the camera: waiting gains the display little and costs the fine-tune steps."""
    from livedenoise.acquisition import priority

    clock = [0.0]
    monkeypatch.setattr(priority.time, "perf_counter", lambda: clock[0])
    # half the frames skipped, a third, a quarter (a one-pass temporal display at 512² skipped up to a fifth while the
    # fine-tune waited, and gains from the waits), one in fifty
    for skip_every, gives_up in ((2, True), (3, True), (4, False), (50, False)):
        display = _CountingDisplay(skip_every)
        hook = YieldToDisplay(lambda d=display: d, share=0.9, trial_s=0.1)
        _run_hook(hook, 40, clock)  # 4 windows
        assert hook.gave_up is gives_up
        shares = hook.skipped_shares  # every window judged, recorded for the report
        assert len(shares) == (2 if gives_up else 3) and all(abs(s - 1 / skip_every) < 0.05 for s in shares)
        if gives_up:
            before = display.stats.submitted
            assert hook() == 0.0 and display.stats.submitted == before  # no more waits asked for
        else:
            assert hook.paused_s > 0.02


def test_a_display_that_changed_way_is_judged_afresh(monkeypatch):
    """An adaptive temporal display that fell behind in two passes and went to one pass (``WorkerStats.ways``) has a
    new pace: the windows it skipped frames in before are no verdict on it, so the fine-tune keeps waiting for it."""
    from livedenoise.acquisition import priority

    clock = [0.0]
    monkeypatch.setattr(priority.time, "perf_counter", lambda: clock[0])
    display = _CountingDisplay(1)  # every frame skipped: two passes, too slow for the camera

    def events(i):
        if i == 15:  # one bad window judged, the second nearly full: the display goes to one pass and keeps up
            display.stats.ways += 1
            display.skip_every = 0

    hook = YieldToDisplay(lambda: display, share=0.9, trial_s=0.1)
    _run_hook(hook, 60, clock, events)
    assert not hook.gave_up and hook.paused_s > 0.03
    # without the change of way the same display, still skipping everything, is given up on
    same = _CountingDisplay(1)
    hook = YieldToDisplay(lambda: same, share=0.9, trial_s=0.1)
    _run_hook(hook, 60, clock)
    assert hook.gave_up


def test_one_bad_window_or_a_new_display_worker_does_not_stop_the_waits(monkeypatch):
    from livedenoise.acquisition import priority

    clock = [0.0]
    monkeypatch.setattr(priority.time, "perf_counter", lambda: clock[0])
    first, second = _CountingDisplay(1), _CountingDisplay(0)
    current = [first]

    def events(i):
        if i == 12:
            first.skip_every = 0  # one bad window (a noise refit, a flush), then the display keeps up again
        if i == 25:
            current[0] = second  # the viewer restarted its display worker: its counts start from 0

    hook = YieldToDisplay(lambda: current[0], share=0.9, trial_s=0.1)
    _run_hook(hook, 60, clock, events)
    assert not hook.gave_up and hook.paused_s > 0.03
    # a window is judged only once it holds MIN_TRIAL_FRAMES frames: 18 frames over 6 s, all skipped, are no verdict
    slow_display = _CountingDisplay(1)
    slow = YieldToDisplay(lambda: slow_display, share=0.9, trial_s=0.1)
    for _ in range(7):
        slow()
        clock[0] += 1.0
    assert slow_display.stats.submitted == 18 and slow._bad_windows == 0
    slow()  # 21 frames by the end of this call's wait: the next call judges the window (a bad one)
    clock[0] += 1.0
    slow()
    assert slow._bad_windows == 1 and not slow.gave_up


def test_the_share_is_a_validated_live_setting():
    from pydantic import ValidationError

    from livedenoise.config import LiveConfig

    assert LiveConfig().finetune_yield_share == 0.5
    assert LiveConfig(finetune_yield_share=0).finetune_yield_share == 0
    with pytest.raises(ValidationError, match="finetune_yield_share"):
        LiveConfig(finetune_yield_share=1.0)
