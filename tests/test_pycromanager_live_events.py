"""How the pycromanager backend feeds live events: whole camera sequences, a bounded queue, and a stop that aborts.

pycromanager runs the events of one ``acquire`` call as one camera sequence and stops the camera between calls, so
the calls' sizes decide how often a free-running camera restarts (README, "Live acquisition overhead"). A fake
acquisition records the calls and "acquires" their events one by one in its own thread, as pycromanager's engine
does, through the frame hook.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from livedenoise.acquisition import pycromanager_backend as backend_module
from livedenoise.acquisition.plans import Illumination, LivePlan
from livedenoise.acquisition.pycromanager_backend import (
    LIVE_CHUNK_FRAMES,
    MIN_LIVE_CHUNK_FRAMES,
    PycromanagerBackend,
)


class ThreadedAcquisition:
    """Stands in for ``pycromanager.Acquisition``: an engine thread turns queued events into frames, one per
    ``frame_s``, through ``process``; it records each call and the most events ever waiting."""

    def __init__(self, process, frame_s: float = 0.0005) -> None:
        self.process, self.frame_s = process, frame_s
        self.calls: list[list[dict]] = []
        self.submitted = self.done = 0
        self.waiting: queue.Queue = queue.Queue()
        self.most_waiting = 0
        self.aborted = threading.Event()
        self.engine = threading.Thread(target=self._run, daemon=True)
        self.engine.start()

    def _run(self) -> None:
        while not self.aborted.is_set():
            try:
                ev = self.waiting.get(timeout=0.01)
            except queue.Empty:
                continue
            time.sleep(self.frame_s)
            if not self.aborted.is_set():
                self.process(np.zeros((4, 4), np.uint16), {"Axes": ev["axes"]})
            self.done += 1

    def get_dataset(self):
        return None

    def acquire(self, events: list[dict]) -> None:
        self.calls.append(events)
        self.submitted += len(events)
        for ev in events:
            self.waiting.put(ev)
        self.most_waiting = max(self.most_waiting, self.waiting.qsize())

    def abort(self) -> None:
        self.aborted.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:  # as pycromanager's: every submitted event acquired, unless aborted
        deadline = time.perf_counter() + 10
        while self.done < self.submitted and not self.aborted.is_set() and time.perf_counter() < deadline:
            time.sleep(0.001)
        self.aborted.set()
        self.engine.join(timeout=5)


def _backend(monkeypatch, capacity: float | None = 2048.0) -> tuple[PycromanagerBackend, list[ThreadedAcquisition]]:
    made: list[ThreadedAcquisition] = []

    def acquisition(self, directory: Path, name: str, process, finished=None):
        made.append(ThreadedAcquisition(process))
        return made[-1]

    def core_value(self, method: str) -> float:
        if capacity is None:
            raise RuntimeError("no such call")
        assert method == "getBufferTotalCapacity"
        return capacity

    monkeypatch.setattr(backend_module.PycromanagerBackend, "_acquisition", acquisition)
    monkeypatch.setattr(backend_module.PycromanagerBackend, "_core_value", core_value)
    return PycromanagerBackend(core=object()), made


def test_live_events_go_to_pycromanager_in_whole_chunks_and_every_frame_reaches_the_hook(monkeypatch, tmp_path):
    backend, made = _backend(monkeypatch)
    seen: list[int] = []
    frames = 2 * LIVE_CHUNK_FRAMES + 5
    info = backend.run_live(LivePlan(Illumination(10.0, None)), lambda img, axes: seen.append(axes["time"]),
                            threading.Event(), tmp_path, max_frames=frames)
    assert [len(c) for c in made[0].calls] == [LIVE_CHUNK_FRAMES, LIVE_CHUNK_FRAMES, 5]
    assert seen == list(range(frames)) and info.frames == frames
    # the next call is made only once half a chunk is left: never more than 1.5 chunks wait
    assert made[0].most_waiting <= LIVE_CHUNK_FRAMES + LIVE_CHUNK_FRAMES // 2
    # free-running: no event carries a start time, so pycromanager may run a whole call as one sequence
    assert all("min_start_time" not in ev for c in made[0].calls for ev in c)


@pytest.mark.parametrize(("capacity", "chunk"), [(2048.0, LIVE_CHUNK_FRAMES), (100.0, 50),
                                                 (31.0, MIN_LIVE_CHUNK_FRAMES), (None, MIN_LIVE_CHUNK_FRAMES)])
def test_a_small_camera_buffer_gets_smaller_calls_so_a_sequence_cannot_overflow_it(monkeypatch, tmp_path, capacity,
                                                                                     chunk):
    """A sequence that runs ahead of the saving fills the core's circular buffer; calls stay within half of it
    (never below the 16 frames of old), and a core that cannot say its capacity gets 16."""
    backend, made = _backend(monkeypatch, capacity)
    backend.run_live(LivePlan(Illumination(10.0, None)), lambda img, axes: None, threading.Event(), tmp_path,
                     max_frames=3 * LIVE_CHUNK_FRAMES)
    assert len(made[0].calls[0]) == chunk


def test_a_timed_live_plan_gives_every_event_its_start_time(monkeypatch, tmp_path) -> None:
    backend, made = _backend(monkeypatch)
    backend.run_live(LivePlan(Illumination(10.0, None), 50.0), lambda img, axes: None, threading.Event(), tmp_path,
                     max_frames=LIVE_CHUNK_FRAMES + 3)
    times = [ev["min_start_time"] for c in made[0].calls for ev in c]
    assert times == pytest.approx([t * 0.05 for t in range(LIVE_CHUNK_FRAMES + 3)])


def test_a_stop_aborts_the_acquisition_at_once_and_queues_nothing_more(monkeypatch, tmp_path) -> None:
    backend, made = _backend(monkeypatch)
    stop = threading.Event()
    seen: list[int] = []

    def on_frame(img, axes) -> None:
        seen.append(axes["time"])
        if len(seen) == 10:
            stop.set()

    t0 = time.perf_counter()
    info = backend.run_live(LivePlan(Illumination(10.0, None)), on_frame, stop, tmp_path)  # no frame limit
    acq = made[0]
    assert acq.aborted.is_set() and time.perf_counter() - t0 < 5.0
    assert len(acq.calls) == 1  # the stop came during the first call: nothing was queued after it
    assert info.frames == len(seen) < LIVE_CHUNK_FRAMES  # the rest of the call was cancelled, not acquired


def test_an_acquisition_pycromanager_ends_by_itself_ends_the_live_loop_with_its_frames_saved(simulated_core, tmp_path,
                                                                                              caplog) -> None:
    """pycromanager aborting on its own (a camera error, a full sequence buffer) used to leave the live loop waiting
    for frames that never came, until the user stopped the session; it now returns, with an error in the log."""
    import logging

    from livedenoise.commands.simulated import pycromanager_backend

    backend = pycromanager_backend(simulated_core)
    made = []
    real = backend._acquisition

    def keep(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    backend._acquisition = keep  # type: ignore[method-assign]
    seen: list[int] = []

    def on_frame(img, axes) -> None:
        seen.append(axes["time"])
        if len(seen) == 5:
            made[0].abort()  # as pycromanager's engine does on an error of its own

    result: list = []
    runner = threading.Thread(target=lambda: result.append(backend.run_live(
        LivePlan(Illumination(20.0, None)), on_frame, threading.Event(), tmp_path)), daemon=True)
    with caplog.at_level(logging.ERROR, logger="livedenoise"):
        runner.start()
        runner.join(timeout=60)
    assert not runner.is_alive(), "the live loop kept waiting after pycromanager ended the acquisition"
    info = result[0]
    assert 5 <= info.frames < 3 * LIVE_CHUNK_FRAMES and seen[:5] == list(range(5))
    assert any("ended the live acquisition by itself" in r.getMessage() for r in caplog.records)
    for t in range(5):  # the frames acquired before the end are on disk
        assert backend.read_raw({"time": t}).shape == (64, 64)
