"""Background workers of a live session: display denoising (newest frame wins) and lossless recording.

Both are fed from the acquisition's frame hook with calls that never block: the camera must not wait
for a model. :class:`DenoiseWorker` keeps only the newest pending frame, so when the model is slower
than the camera stale display frames are dropped (and counted). :class:`DenoisedWriter` records
*every* frame: it queues frames up to a bound and, past it, remembers only their axes and re-reads the
pixels from the raw dataset on disk later, so memory stays bounded and nothing is lost; after the
acquisition ends it catches up, with progress.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
    failed: int = 0
    last_latency_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.perf_counter)

    @property
    def fps(self) -> float:
        elapsed = time.perf_counter() - self.started_at
        return self.denoised / elapsed if elapsed > 0 else 0.0


class DenoiseWorker:
    """Denoises the newest submitted frame in a background thread.

    ``denoise(frame, info) -> frame`` is called with the ``info`` the frame was submitted with (its axes,
    so one worker can serve several channels' models). A frame may be submitted as ``None`` with
    ``read_raw`` given: the worker reads its pixels with ``read_raw(info)`` itself (a frame already saved to
    disk, so the acquisition thread never touches pixels). ``max_fps`` caps how often a frame is denoised
    (``None``: as fast as the model goes). ``model_name`` a callable
    returning the current model's name. Exceptions never escape: the frame is reported with
    ``denoised=None`` and the error text, and the worker goes on.
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
        self._pending: tuple[np.ndarray, dict, float] | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._max_errors = max_errors_kept
        self.stats = WorkerStats()
        self._thread = threading.Thread(target=self._run, name="livedenoise-denoise", daemon=True)

    def start(self) -> "DenoiseWorker":
        self.stats.started_at = time.perf_counter()
        self._thread.start()
        return self

    def submit(self, raw: np.ndarray | None, info: dict | None = None) -> None:
        """Offer a frame for display denoising; replaces (and counts as dropped) any frame still waiting."""
        with self._cond:
            if self._pending is not None:
                self.stats.dropped += 1
            self._pending = (raw, info or {}, time.perf_counter())
            self.stats.submitted += 1
            self._cond.notify()

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
                self._pending = None
                self._busy = True
                last_start = time.perf_counter()
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


def _key(axes: dict) -> tuple:
    return tuple(sorted((str(k), v) for k, v in axes.items()))


class DenoisedWriter:
    """Writes every denoised frame, in order, as an NDTiff dataset with the raw dataset's axes.

    Frames are denoised in this writer's own thread by ``denoise(frame, axes)``. Up to ``max_queued`` frames wait in memory; past
    that only their axes are kept and the pixels are read back from the raw dataset (``read_raw``)
    when the writer gets to them. Denoised values are in camera units (ADU), rounded and clipped to
    the camera dtype because NDTiff stores only 8/16-bit integers; the count of clipped pixels is kept.
    ``frame_metadata(axes)`` adds to each frame's ``livedenoise`` metadata (e.g. the model that denoised it).
    """

    def __init__(self, denoise: Callable[[np.ndarray, dict], np.ndarray], directory: str | Path, name: str = "denoised", *,
                 read_raw: Callable[[dict], np.ndarray] | None = None, max_queued: int = 32,
                 summary_metadata: dict | None = None, frame_metadata: Callable[[dict], dict] | None = None) -> None:
        self._denoise = denoise
        self.directory = Path(directory)
        self.name = name
        self._read_raw = read_raw
        self._max_queued = max_queued
        self._summary = summary_metadata or {}
        self._frame_metadata = frame_metadata  # called in this writer's thread right after each frame is denoised
        self._queue: deque[tuple[dict, np.ndarray | None]] = deque()
        self._ready: dict[tuple, np.ndarray] = {}  # frames the display worker already denoised
        self.reused = 0
        self._in_memory = 0
        self._cond = threading.Condition()
        self._closing = False
        self.written = 0
        self.submitted = 0
        self.spilled = 0
        self.clipped_pixels = 0
        self.errors: list[str] = []
        self._dataset = None
        self.path: Path | None = None
        self._thread = threading.Thread(target=self._run, name="livedenoise-writer", daemon=True)

    def start(self) -> "DenoisedWriter":
        self._thread.start()
        return self

    def submit(self, axes: dict, raw: np.ndarray | None) -> None:
        """Queue a frame (never blocks). Past ``max_queued`` in memory, only its axes are kept."""
        with self._cond:
            if raw is not None and self._in_memory < self._max_queued:
                self._queue.append((dict(axes), raw))
                self._in_memory += 1
            else:
                if self._read_raw is None and raw is not None:
                    # No way to re-read it later: keep it in memory rather than lose it.
                    self._queue.append((dict(axes), raw))
                    self._in_memory += 1
                else:
                    self._queue.append((dict(axes), None))
                    self.spilled += 1
            self.submitted += 1
            self._cond.notify()

    def offer_denoised(self, axes: dict, denoised: np.ndarray) -> None:
        """Hand over a frame the display worker has already denoised, so it is not computed twice."""
        with self._cond:
            if len(self._ready) < 4 * self._max_queued:
                self._ready[_key(axes)] = denoised

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._queue)

    def _open(self, dtype: np.dtype) -> None:
        from ndstorage import NDTiffDataset

        self.directory.mkdir(parents=True, exist_ok=True)
        self._dataset = NDTiffDataset(str(self.directory), name=self.name, writable=True,
                                      summary_metadata={"livedenoise": self._summary})
        self.path = Path(self._dataset.path) if getattr(self._dataset, "path", None) else self.directory / self.name

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
                axes, raw = self._queue.popleft()
                if raw is not None:
                    self._in_memory -= 1
            with self._cond:
                out = self._ready.pop(_key(axes), None)
            try:
                if raw is None:
                    raw = self._read_raw(axes)  # type: ignore[misc]
                if out is None:
                    out = self._denoise(raw, axes)
                else:
                    self.reused += 1
                dtype = raw.dtype if raw.dtype in (np.uint8, np.uint16) else np.dtype(np.uint16)
                info = np.iinfo(dtype)
                rounded = np.rint(out)
                self.clipped_pixels += int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
                image = np.clip(rounded, info.min, info.max).astype(dtype)
                if self._dataset is None:
                    self._open(dtype)
                extra = self._frame_metadata(axes) if self._frame_metadata is not None else {}
                self._dataset.put_image(axes, image, {"Axes": axes, "livedenoise": {"source": "denoised", **extra}})
                self.written += 1
            except Exception as exc:
                msg = f"frame {axes}: {exc.__class__.__name__}: {exc}"
                if len(self.errors) < 20:
                    self.errors.append(msg)
                log.warning("denoised writer: %s", msg)

    def finish(self, progress: bool = True, timeout: float | None = None) -> int:
        """Catch up on every queued frame (with a progress bar), close the dataset, return frames written."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        total = self.submitted
        if progress and self.backlog:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task("writing denoised frames", total=total, completed=self.written)
                while self._thread.is_alive():
                    bar.update(task, completed=self.written + len(self.errors))
                    self._thread.join(0.2)
        self._thread.join(timeout)
        if self._dataset is not None:
            self._dataset.finish()
            self._dataset.close()
        return self.written
