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
        worker.submit(np.zeros((4, 4), np.uint16))
        started.clear()
        assert started.wait(5.0)
        assert worker.wait_while_busy(0.05) == pytest.approx(0.05, abs=0.04)  # bounded by max_wait_s
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
    display.running = False
    assert YieldToDisplay(lambda: display, share=0.5)() == 0.0
    off = YieldToDisplay(lambda: FakeDisplay(), share=0.0)
    off()
    time.sleep(0.05)
    assert off() == 0.0 and off.paused_s == 0.0  # share 0: the fine-tune never waits
    with pytest.raises(ValueError, match=r"share 1\.0 is invalid"):
        YieldToDisplay(lambda: None, share=1.0)


def test_the_fine_tune_stops_waiting_for_a_display_that_skips_frames_even_so():
    """A model too slow for the camera: waiting gains the display little and costs the fine-tune steps."""
    class Display:
        running = True

        def __init__(self, skip_every: int):
            self.stats = WorkerStats()
            self.skip_every = skip_every

        def wait_while_busy(self, max_wait_s):
            self.stats.submitted += 1  # a frame arrives during every wait; some are skipped
            if self.stats.submitted % self.skip_every == 0:
                self.stats.skipped_busy += 1
            time.sleep(0.001)
            return 0.001

    for skip_every, gives_up in ((2, True), (50, False)):  # half the frames skipped / one in fifty
        display = Display(skip_every)
        hook = YieldToDisplay(lambda d=display: d, share=0.9, trial_s=0.3)
        start = time.perf_counter()
        while time.perf_counter() - start < 1.0:
            hook()
            time.sleep(0.001)
        assert hook.gave_up is gives_up
        if gives_up:
            before = display.stats.submitted
            assert hook() == 0.0 and display.stats.submitted == before  # no more waits asked for
        else:
            assert hook.paused_s > 0.1


def test_the_share_is_a_validated_live_setting():
    from pydantic import ValidationError

    from livedenoise.config import LiveConfig

    assert LiveConfig().finetune_yield_share == 0.5
    assert LiveConfig(finetune_yield_share=0).finetune_yield_share == 0
    with pytest.raises(ValidationError, match="finetune_yield_share"):
        LiveConfig(finetune_yield_share=1.0)
