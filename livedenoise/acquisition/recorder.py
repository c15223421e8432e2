"""Lossless recording of a live session's denoised frames, beside the raw dataset.

Fed from the acquisition's frame hook with calls that never block. :class:`DenoisedWriter` records *every*
frame: it queues frames up to a bound and, past it, remembers only their axes and re-reads the pixels from
the raw dataset on disk later (or, where the raw data cannot be read back, from its own parking folder:
:mod:`livedenoise.acquisition.spill`), so memory stays bounded and nothing is lost; after the acquisition ends it
catches up, with progress. (The display, which may drop frames, is :mod:`livedenoise.acquisition.display`.)
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.acquisition.axes import TIME_AXES, axes_key, series_key
from livedenoise.acquisition.priority import lower_this_thread_priority
from livedenoise.acquisition.spill import SpillStore
from livedenoise.errors import ConfigError

log = logging.getLogger("livedenoise")


#: Formats of the recorded denoised frames: NDTiff while acquiring, optionally copied into an OME-Zarr at the end.
OUTPUT_FORMATS = ("ndtiff", "ome-zarr")
#: Temporal windows of recorded frames: the frames before and after each one (as batch denoising), or before it
#: alone (as the live display shows it).
RECORDED_WINDOWS = ("centred", "causal")
#: At most this many bytes of the display's results wait for the writer (:meth:`DenoisedWriter.offer_denoised`):
#: 256 frames of 512², 16 of 2048² (float32). A writer that falls further behind denoises the others itself.
READY_BYTES = 256 * 1024**2
#: Frames written whose keys are remembered, so that a result the display hands over late is dropped, not kept.
WRITTEN_KEYS_KEPT = 4096


#: At most this many following frames read back from disk wait for their own turn (:meth:`DenoisedWriter._following`).
PEEKED_MAX = 64
#: Seconds before a writer whose disk refused a frame tries parking frames again (:meth:`DenoisedWriter._park`).
PARK_RETRY_S = 5.0


class DenoisedWriter:
    """Writes every denoised frame, in order, as an NDTiff dataset with the raw dataset's axes.

    Frames are denoised in this writer's own thread by ``denoise(frame, axes)``, at a lower scheduling priority than
    the acquisition and the display (:mod:`livedenoise.acquisition.priority`). Up to ``max_queued`` frames wait
    in memory; past that only their axes are kept and the pixels are read back from the raw dataset (``read_raw``)
    when the writer gets to them; without ``read_raw`` they are parked on disk in a hidden folder of ``directory``
    until then (:class:`~livedenoise.acquisition.spill.SpillStore`, removed when the writer finishes). Denoised
    values are in camera units (ADU), rounded and clipped to the camera dtype because NDTiff stores only 8/16-bit
    integers; the count of clipped pixels is kept.
    ``frame_metadata(axes)`` adds to each frame's ``livedenoise`` metadata (e.g. the model that denoised it).
    ``offer_wait_s``: how long after a frame was submitted the writer waits for the display's result of it
    (:meth:`offer_denoised`) before denoising it itself. The display usually has it within a frame or two; without
    the wait, a writer that keeps up took each frame as it came, while the display was still denoising it, and
    both computed it. The wait ends early once the display has handed over a later frame (it works in order, so
    it skipped this one), when the writer is closing, or when half of ``max_queued`` frames wait behind it. 0
    (default) for writers that are never offered results (a temporal model's recorder fuses every frame with its
    own window).
    ``lookahead``: give ``denoise`` the frames of the same series (the same axes but time) acquired after each one
    that has a time axis, up to this many (``denoise(frame, axes, following)``; fewer at the end of the
    acquisition): a temporal model then fuses every recorded frame with frames on both sides of it, as batch
    denoising does, instead of the frames before it alone. The writer waits for them, so it records that many frames
    of the series behind the camera. 0 (default): ``denoise(frame, axes)``.
    ``inspect(raw, denoised)`` sees every frame, denoised here or handed over, before it is rounded and written (a
    live session scores the recorded frames against a simulator's ground truth).
    ``on_closing()`` is called once, in the writer's thread, when :meth:`finish` has been called (the acquisition
    ended): the frames still waiting then have the machine to themselves, and a live session gives this thread
    every core for them.
    ``output_format="ome-zarr"``: when the acquisition ends, the NDTiff is copied into ``<name>.ome.zarr``
    (:func:`livedenoise.io.convert.to_ome_zarr`: its final shape is known only then, and an append-only NDTiff is
    what survives a crash mid-session) and removed once the copy is complete; if the copy fails, the NDTiff stays
    and the failure is in :attr:`errors`.
    """

    def __init__(self, denoise: Callable[[np.ndarray, dict], np.ndarray], directory: str | Path,
                 name: str = "denoised", *, read_raw: Callable[[dict], np.ndarray] | None = None, max_queued: int = 32,
                 summary_metadata: dict | None = None, frame_metadata: Callable[[dict], dict] | None = None,
                 output_format: str = "ndtiff", offer_wait_s: float = 0.0, lookahead: int = 0,
                 inspect: Callable[[np.ndarray, np.ndarray], None] | None = None,
                 on_closing: Callable[[], None] | None = None) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"denoised output format {output_format!r} is unknown; expected one of "
                              f"{', '.join(OUTPUT_FORMATS)}.")
        self.output_format = output_format
        self._denoise = denoise
        self.directory = Path(directory)
        self.name = name
        self._read_raw = read_raw
        #: where frames past ``max_queued`` wait when they cannot be read back from the raw dataset
        self._spill = SpillStore(self.directory) if read_raw is None else None
        self._max_queued = max_queued
        self._summary = summary_metadata or {}
        self._frame_metadata = frame_metadata  # called in this writer's thread right after each frame is denoised
        self._inspect = inspect  # sees each frame and its denoised values before they are rounded and written
        self._on_closing = on_closing  # called once in this writer's thread when the acquisition has ended
        # axes, pixels (None: spilled), when queued, submission number
        self._queue: deque[tuple[dict, np.ndarray | None, float, int]] = deque()
        self._number_of: dict[tuple, int] = {}  # submission number of each queued frame, by its axes
        self._last_offered = -1  # the highest submission number the display handed a result over for
        self._ready: dict[tuple, np.ndarray] = {}  # frames the display worker already denoised
        self._ready_bytes = 0
        self._written_keys: OrderedDict[tuple, None] = OrderedDict()
        self._offer_wait_s = max(float(offer_wait_s), 0.0)
        if int(lookahead) < 0:
            raise ValueError(f"lookahead {lookahead!r} is invalid; expected a number of frames >= 0")
        self._lookahead = int(lookahead)
        # following frames read back from disk, by submission number
        self._peeked: OrderedDict[int, np.ndarray] = OrderedDict()
        self.reused = 0
        self._in_memory = 0
        self._cond = threading.Condition()
        self._closing = False
        self.written = 0
        self.submitted = 0
        self.spilled = 0
        self.clipped_pixels = 0
        self.errors: list[str] = []
        self._dataset: Any = None  # an ndstorage NDTiffDataset once the first frame arrives
        self.path: Path | None = None
        self._thread = threading.Thread(target=self._run, name="livedenoise-writer", daemon=True)
        self._parking_done = False
        self._parker = None if self._spill is None else threading.Thread(target=self._park, daemon=True,
                                                                          name="livedenoise-writer-parking")

    def start(self) -> DenoisedWriter:
        self._thread.start()
        if self._parker is not None:
            self._parker.start()
        return self

    def submit(self, axes: dict, raw: np.ndarray | None) -> None:
        """Queue a frame (never blocks). Past ``max_queued`` in memory, only its axes are kept: its pixels are read
        back later with ``read_raw``, or, without it, parked on disk meanwhile by a thread of this writer
        (:meth:`_park`), so that the caller never waits for a disk."""
        now = time.perf_counter()
        with self._cond:
            number = self.submitted
            self._number_of[axes_key(axes)] = number
            if raw is not None and (self._in_memory < self._max_queued or self._spill is not None):
                self._queue.append((dict(axes), raw, now, number))
                self._in_memory += 1
            else:
                self._queue.append((dict(axes), None, now, number))
                self.spilled += 1
            self.submitted += 1
            self._cond.notify_all()

    def _park(self) -> None:
        """The parking thread of a writer without ``read_raw``: while more than ``max_queued`` frames wait in memory,
        writes the newest of them to disk (:class:`~livedenoise.acquisition.spill.SpillStore`) and drops its pixels
        from the queue; the writer reads them back at their turn. When the disk refuses a frame (full, gone, or
        within :data:`~livedenoise.acquisition.spill.KEEP_FREE_BYTES` of full: that room is the raw data's), the
        frames stay in memory and parking is tried again :data:`PARK_RETRY_S` later (nothing may be lost)."""
        lower_this_thread_priority("the denoised-frame recorder's parking")
        assert self._spill is not None
        while True:
            with self._cond:
                while not self._parking_done and (self._in_memory <= self._max_queued or self._closing):
                    self._cond.wait()
                if self._parking_done:
                    return
                entry = next((e for e in reversed(self._queue) if e[1] is not None), None)
            if entry is None:  # counted but not queued: cannot happen; do not spin
                time.sleep(0.01)
                continue
            axes, raw, queued_at, number = entry
            if not self._spill.put(number, raw):
                with self._cond:  # keep them in memory for now; try again later
                    self._cond.wait_for(lambda: self._parking_done, PARK_RETRY_S)
                continue
            taken = False
            with self._cond:
                for i in range(len(self._queue) - 1, -1, -1):
                    if self._queue[i][3] == number:
                        self._queue[i] = (axes, None, queued_at, number)
                        self._in_memory -= 1
                        self.spilled += 1
                        break
                else:
                    taken = True  # the writer took it meanwhile, with its pixels
            if taken:
                self._spill.drop(number)  # outside the lock: submit never waits for a disk

    def offer_denoised(self, axes: dict, denoised: np.ndarray) -> None:
        """Hand over a frame the display worker has already denoised, so it is not computed twice (dropped when the
        frame was already written, or when :data:`READY_BYTES` of results already wait)."""
        key = axes_key(axes)
        with self._cond:
            self._last_offered = max(self._last_offered, self._number_of.get(key, -1))
            if key in self._written_keys or key in self._ready or self._ready_bytes + denoised.nbytes > READY_BYTES:
                self._cond.notify_all()  # a later frame's result: a writer waiting for an earlier one stops waiting
                return
            self._ready[key] = denoised
            self._ready_bytes += denoised.nbytes
            self._cond.notify_all()

    def _take_ready(self, key: tuple, queued_at: float, number: int) -> np.ndarray | None:
        """The display's result of frame ``key``, waiting for it until ``offer_wait_s`` after the frame was queued,
        unless the display already handed over a later frame, the writer is closing or falling behind. Call with the
        condition held."""
        end = queued_at + self._offer_wait_s
        while (key not in self._ready and self._last_offered <= number and not self._closing
               and len(self._queue) < max(self._max_queued // 2, 1)):
            left = end - time.perf_counter()
            if left <= 0:
                break
            self._cond.wait(left)
        out = self._ready.pop(key, None)
        if out is not None:
            self._ready_bytes -= out.nbytes
        return out

    def _following(self, axes: dict) -> list[np.ndarray]:
        """The pixels of up to ``lookahead`` frames of ``axes``' series queued after it, waiting for them to be
        acquired unless the writer is closing (then the frames there are). Frames already spilled to disk are read
        back once and kept until their own turn (at most ``PEEKED_MAX``)."""
        if not any(k in TIME_AXES for k in axes):
            return []  # not part of a time series (a z-stack, one time point): no later frame of it will come
        series = series_key(axes)
        with self._cond:
            while True:
                ahead = list(islice(((a, r, n) for a, r, _, n in self._queue if series_key(a) == series),
                                    self._lookahead))
                if len(ahead) >= self._lookahead or self._closing:
                    break
                self._cond.wait()
        pixels = []
        for a, r, n in ahead:
            if r is None:
                r = self._peeked.get(n)
                if r is None:
                    r = self._read_back(a, n)
                    self._peeked[n] = r  # taken back at its own turn, which comes soon: it is near the queue's head
                    while len(self._peeked) > PEEKED_MAX:
                        self._peeked.popitem(last=False)
            pixels.append(r)
        return pixels

    @property
    def parked(self) -> int:
        """Frames parked on disk so far, each until its turn (a running total; a writer without ``read_raw``)."""
        return self.spilled if self._spill is not None else 0

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
        lower_this_thread_priority("the denoised-frame recorder")  # it catches up later; the display cannot
        closing_seen = False
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                closing = self._closing
                if not self._queue and closing:
                    return
            if closing and not closing_seen:
                closing_seen = True
                if self._on_closing is not None:
                    try:
                        self._on_closing()
                    except Exception as exc:  # a hook must never cost a recorded frame
                        log.warning("denoised writer: on_closing failed: %s: %s", exc.__class__.__name__, exc)
            with self._cond:
                axes, raw, queued_at, number = self._queue.popleft()
                if raw is not None:
                    self._in_memory -= 1
            key = axes_key(axes)
            with self._cond:
                out = self._take_ready(key, queued_at, number)
                self._number_of.pop(key, None)
                self._written_keys[key] = None  # from now on the display's result of this frame comes too late
                while len(self._written_keys) > WRITTEN_KEYS_KEPT:
                    self._written_keys.popitem(last=False)
            try:
                if raw is None:
                    raw = self._peeked.pop(number, None)
                if raw is None:
                    raw = self._read_back(axes, number)
                if out is None:
                    out = (self._denoise(raw, axes, self._following(axes)) if self._lookahead  # type: ignore[call-arg]
                           else self._denoise(raw, axes))
                else:
                    self.reused += 1
                if self._inspect is not None:
                    self._inspect(raw, out)
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
            if self._spill is not None:
                self._spill.drop(number)

    def _read_back(self, axes: dict, number: int) -> np.ndarray:
        """The pixels of frame ``number`` (``axes``), queued without them: from the raw dataset (``read_raw``), or
        where it was parked."""
        if self._read_raw is not None:
            return self._read_raw(axes)
        assert self._spill is not None  # a writer without read_raw parks what it cannot keep
        return self._spill.get(number)

    def finish(self, progress: bool = True, timeout: float | None = None) -> int:
        """Catch up on every queued frame (with a progress bar), close the dataset, return frames written."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        total = self.submitted
        if progress and self.backlog:
            from livedenoise.progress import counting

            with counting("writing denoised frames", total, transient=True, unit="frames") as update:
                while self._thread.is_alive():
                    update(self.written + len(self.errors), total)
                    self._thread.join(0.2)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._thread.join(timeout)
        if self._spill is not None and self._parker is not None:
            with self._cond:
                self._parking_done = True
                self._cond.notify_all()
            self._parker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive() or self._parker.is_alive():  # timed out: the parked frames are still needed
                log.warning("denoised writer: %d frames still wait in %s (not removed: the writer has not finished)",
                            len(self._spill), self._spill.path)
            else:
                self._spill.close()
        if self._dataset is not None:
            self._dataset.finish()
            self._dataset.close()
            if self.output_format == "ome-zarr" and self.path is not None:
                self._to_ome_zarr(self.path)
        return self.written

    def _to_ome_zarr(self, recorded: Path) -> None:
        import shutil

        from livedenoise.io.convert import to_ome_zarr

        target = self.directory / f"{self.name}.ome.zarr"
        n = 1
        while target.exists() or target.with_name(target.name + ".partial").exists():
            target, n = self.directory / f"{self.name}_{n}.ome.zarr", n + 1
        try:
            to_ome_zarr(recorded, target, {"recorded_as": "ndtiff", **self._summary})
        except Exception as exc:  # the NDTiff holds every frame: nothing is lost, the user is told
            self.errors.append(f"copying the denoised frames into OME-Zarr failed ({exc.__class__.__name__}: {exc}); "
                               f"they are in the NDTiff dataset {recorded}")
            log.warning("denoised writer: %s", self.errors[-1])
            return
        shutil.rmtree(recorded)  # this writer created it, and the OME-Zarr now holds every frame
        self.path = target
