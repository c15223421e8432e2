"""How the pycromanager backend feeds live events: whole camera sequences, a bounded queue, and a stop that aborts.

pycromanager runs the events of one ``acquire`` call as one camera sequence and stops the camera between calls, so
the calls' sizes decide how often a free-running camera restarts (README, "Live acquisition overhead"). A fake
acquisition records the calls and "acquires" each event at once through the frame hook, as pycromanager would.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from livedenoise.acquisition import pycromanager_backend as backend_module
from livedenoise.acquisition.plans import Illumination, LivePlan
from livedenoise.acquisition.pycromanager_backend import LIVE_CHUNK_FRAMES, PycromanagerBackend


class RecordingAcquisition:
    """Stands in for ``pycromanager.Acquisition``: each event becomes a frame through ``process`` at once."""

    def __init__(self, process) -> None:
        self.process = process
        self.calls: list[list[dict]] = []
        self.aborted = False

    def get_dataset(self):
        return None

    def acquire(self, events: list[dict]) -> None:
        self.calls.append(events)
        for ev in events:
            if self.aborted:
                return
            self.process(np.zeros((4, 4), np.uint16), {"Axes": ev["axes"]})

    def abort(self) -> None:
        self.aborted = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _backend(monkeypatch) -> tuple[PycromanagerBackend, list[RecordingAcquisition]]:
    made: list[RecordingAcquisition] = []

    def acquisition(self, directory: Path, name: str, process):
        made.append(RecordingAcquisition(process))
        return made[-1]

    monkeypatch.setattr(backend_module.PycromanagerBackend, "_acquisition", acquisition)
    return PycromanagerBackend(core=object()), made


def test_live_events_go_to_pycromanager_in_calls_of_the_chunk_size_and_every_frame_reaches_the_hook(
        monkeypatch, tmp_path) -> None:
    backend, made = _backend(monkeypatch)
    seen: list[int] = []
    frames = 2 * LIVE_CHUNK_FRAMES + 5
    info = backend.run_live(LivePlan(Illumination(10.0, None)), lambda img, axes: seen.append(axes["time"]),
                            threading.Event(), tmp_path, max_frames=frames)
    sizes = [len(c) for c in made[0].calls]
    assert sizes == [LIVE_CHUNK_FRAMES, LIVE_CHUNK_FRAMES, 5]
    assert LIVE_CHUNK_FRAMES >= 64  # 16 cost a free-running camera 7 % of its frames in restarts
    assert seen == list(range(frames)) and info.frames == frames
    # free-running: no event carries a start time, so pycromanager may sequence a whole call
    assert all("min_start_time" not in ev for c in made[0].calls for ev in c)


def test_a_timed_live_plan_gives_every_event_its_start_time(monkeypatch, tmp_path) -> None:
    backend, made = _backend(monkeypatch)
    backend.run_live(LivePlan(Illumination(10.0, None), 50.0), lambda img, axes: None, threading.Event(), tmp_path,
                     max_frames=LIVE_CHUNK_FRAMES + 3)
    times = [ev["min_start_time"] for c in made[0].calls for ev in c]
    assert times == [t * 0.05 for t in range(LIVE_CHUNK_FRAMES + 3)]


def test_a_stop_during_a_call_aborts_the_acquisition_and_queues_nothing_more(monkeypatch, tmp_path) -> None:
    backend, made = _backend(monkeypatch)
    stop = threading.Event()
    seen: list[int] = []

    def on_frame(img, axes) -> None:
        seen.append(axes["time"])
        if len(seen) == 10:
            stop.set()

    info = backend.run_live(LivePlan(Illumination(10.0, None)), on_frame, stop, tmp_path)  # no frame limit
    acq = made[0]
    assert acq.aborted
    assert len(acq.calls) == 1  # the stop came during the first call: nothing queued after it
    assert info.frames == len(seen) == LIVE_CHUNK_FRAMES  # the fake finishes its call; a real abort cuts it short
