"""Display denoising of a live session: the newest frame wins, the camera never waits.

Fed from the acquisition's frame hook with calls that never block: the camera must not wait for a model.
:class:`DenoiseWorker` keeps only the newest pending frame, so when the model is slower than the camera
stale display frames are dropped (and counted). Every frame is still recorded, losslessly, by
:mod:`livedenoise.acquisition.recorder`.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("livedenoise")

@dataclass
class DenoisedFrame:
    """A raw frame and its denoised version (``None`` if denoising failed) with timing."""

    raw: np.ndarray | None
    denoised: np.ndarray | None
    info: dict[str, Any]
    acquired_at: float
    done_at: float
    model_name: str
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.done_at - self.acquired_at


@dataclass
class WorkerStats:
    submitted: int = 0
    denoised: int = 0
    dropped: int = 0
    skipped_busy: int = 0  # of dropped: replaced while a frame was being denoised (the display fell behind)
    failed: int = 0
    #: bumped when the display changes its way of denoising (two passes / one pass: ``PassChoice``): its pace is then
    #: judged anew by what waits for it (``YieldToDisplay``)
    ways: int = 0
    last_latency_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.perf_counter)

    @property
    def fps(self) -> float:
        elapsed = time.perf_counter() - self.started_at
        return self.denoised / elapsed if elapsed > 0 else 0.0


def behind(info: dict) -> bool:
    """True when the display skipped frames before this one: it has fallen behind the camera."""
    return bool(info.get("skipped_before"))


class DenoiseWorker:
    """Denoises the newest submitted frame in a background thread.

    ``denoise(frame, info) -> frame`` is called with the ``info`` the frame was submitted with (its axes,
    so one worker can serve several channels' models). A frame may be submitted as ``None`` with
    ``read_raw`` given: the worker reads its pixels with ``read_raw(info)`` itself (a frame already saved to
    disk, so the acquisition thread never touches pixels). ``max_fps`` caps how often a frame is denoised
    (``None``: as fast as the model goes). ``model_name`` a callable
    returning the current model's name. Exceptions never escape: the frame is reported with
    ``denoised=None`` and the error text, and the worker goes on. ``info["skipped_before"]`` tells ``denoise``
    how many frames were skipped since the one shown before (0: the display keeps up), so it can choose a
    cheaper computation while it has fallen behind (:func:`behind`); ``info["submitted_at"]``, when the frame was
    submitted (``time.perf_counter``), tells it the camera's pace.
    """

    def __init__(self, denoise: Callable[[np.ndarray, dict], np.ndarray],
                 on_result: Callable[[DenoisedFrame], None] | None = None,
                 *, model_name: Callable[[], str] = lambda: "", max_errors_kept: int = 20,
                 read_raw: Callable[[dict], np.ndarray] | None = None, max_fps: float | None = None) -> None:
        if max_fps is not None and not max_fps > 0:
            raise ValueError(f"max_fps {max_fps} is invalid; expected a positive frame rate or None")
        self._denoise = denoise
        self._read_raw = read_raw
        self._min_interval = 1.0 / max_fps if max_fps else 0.0
        self._on_result = on_result
        self._model_name = model_name
        self._pending: tuple[np.ndarray | None, dict, float] | None = None
        self._skipped = 0  # frames replaced since the last one taken
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._started_at = -math.inf  # when the frame being denoised (or the last one) was taken
        self._max_errors = max_errors_kept
        self.stats = WorkerStats()
        self._thread = threading.Thread(target=self._run, name="livedenoise-denoise", daemon=True)

    def start(self) -> DenoiseWorker:
        self.stats.started_at = time.perf_counter()
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread.is_alive() and not self._stop

    def submit(self, raw: np.ndarray | None, info: dict | None = None) -> None:
        """Offer a frame for display denoising; replaces (and counts as dropped) any frame still waiting."""
        with self._cond:
            if self._pending is not None:
                self.stats.dropped += 1
                # replaced while a frame was being denoised past the time the next one could start: behind (a frame
                # replaced while max_fps would hold the next one back anyway was not lost to a slow model)
                if self._busy and time.perf_counter() >= self._started_at + self._min_interval:
                    self._skipped += 1
                    self.stats.skipped_busy += 1
            self._pending = (raw, dict(info or {}), time.perf_counter())
            self.stats.submitted += 1
            self._cond.notify_all()  # all: a fine-tune may wait on this condition too (wait_while_busy)

    def _run(self) -> None:
        last_start = -math.inf
        while True:
            with self._cond:
                # A display rate cap leaves the CPU to the acquisition between frames; newer frames replace the
                # pending one meanwhile, so what is shown is still the newest.
                while not self._stop and (self._pending is None or
                                          time.perf_counter() < last_start + self._min_interval):
                    wait = last_start + self._min_interval - time.perf_counter()
                    self._cond.wait(wait if self._pending is not None and wait > 0 else None)
                if self._pending is None and self._stop:
                    return
                raw, info, t0 = self._pending  # type: ignore[misc]
                info["skipped_before"], self._skipped = self._skipped, 0
                info["submitted_at"] = t0  # when the camera's frame was offered: the camera's pace, for PassChoice
                self._pending = None
                self._busy = True
                last_start = self._started_at = time.perf_counter()
            error = None
            try:
                if raw is None:
                    if self._read_raw is None:
                        raise ValueError("a frame was submitted without pixels and this worker has no read_raw")
                    raw = self._read_raw(info)
                out = self._denoise(raw, info)
            except Exception as exc:  # never let a model failure reach acquisition
                out = None
                error = f"{exc.__class__.__name__}: {exc}"
                self.stats.failed += 1
                if len(self.stats.errors) < self._max_errors:
                    self.stats.errors.append(error)
                log.warning("denoising a frame failed: %s", error)
            done = time.perf_counter()
            if out is not None:
                self.stats.denoised += 1
                self.stats.last_latency_s = done - t0
            # a denoise callable serving several models names the one it used in info["model"]
            result = DenoisedFrame(raw, out, info, t0, done, info.get("model") or self._model_name(), error)
            if self._on_result is not None:
                try:
                    self._on_result(result)
                except Exception:
                    log.exception("frame display callback failed")
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """True while a frame is being denoised."""
        with self._cond:
            return self._busy

    def wait_while_busy(self, max_wait_s: float) -> float:
        """Block while a frame is being denoised, at most ``max_wait_s``; return the seconds waited (0.0 exactly
        when the worker was idle).

        For work that shares the CPU with the display and can wait, such as a background fine-tune: waiting here
        leaves the display the cores for its frame, and costs nothing between frames. Waiting only while a frame
        was queued behind the current one (the display already late) left it 18.4 of 20 frames/s while a fine-tune
        ran (``lite``, bf16, 512², 2 cores); waiting whenever it denoises, 19.9.
        """
        start = time.perf_counter()
        end = start + max(max_wait_s, 0.0)
        with self._cond:
            if not self._busy or self._stop:
                return 0.0  # idle: no wait at all (a caller may loop on a positive return)
            while self._busy and not self._stop:
                left = end - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
        return time.perf_counter() - start

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the pending frame (if any) has been processed."""
        end = time.perf_counter() + timeout
        with self._cond:
            while (self._pending is not None or self._busy) and time.perf_counter() < end:
                self._cond.wait(0.05)
            return self._pending is None and not self._busy

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the frame in progress, then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
