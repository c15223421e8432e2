"""How a temporal backbone's live display denoises each frame: two passes while it keeps up, one pass while it cannot.

The temporal backbone's display frame costs two 2-D passes (the frame's own, then its motion-compensated average
with the frames before it: :mod:`livedenoise.second_pass`), about 2.2x a 2-D frame on a CPU; one pass
(:mod:`livedenoise.one_pass`) costs about 1.15x, is 0.3 dB lower on the simulator's time-lapses and as good on real
structure. Where the CPU keeps up with the two passes they are the better display; where it does not, the display
skips camera frames, and one pass shows more of them, sooner, at the same quality as displayed (the quick start's
512² sessions: 8.5-8.8 against 6.0-6.7 frames/s). ``[live] one_pass = "auto"`` (the default) lets the display choose,
from what it measures: it switches to one pass once it has skipped camera frames before ``BEHIND_FRAMES`` of the last
``RECENT`` frames it showed (one late frame, a fine-tune starting, a garbage collection, does not switch it), and
back to two passes when one pass has kept up for ``MIN_DWELL`` frames and a two-pass frame, estimated at ``RATIO``
one-pass frames, would take at most ``HEADROOM`` of the time between camera frames. A display that falls behind
again soon after switching back waits twice as long before the next try, so it never alternates frame by frame.

While it shows two passes and falls behind on a single frame, that frame skips the second pass (the fusion of the
frames' 2-D results alone, half the cost), as before this choice existed.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import numpy as np

from livedenoise.acquisition.display import behind

#: ``[live] one_pass`` values: True (always one pass), False (always two), "auto" (chosen as measured).
OnePass = bool | Literal["auto"]

#: Shown frames looked back on, and how many of them must have had camera frames skipped before them to switch.
RECENT, BEHIND_FRAMES = 10, 3
#: A two-pass frame's cost in one-pass frames (measured 1.9-2.0 at 512² and 2048²: README "One pass for the live
#: display"), and the share of the camera's frame interval it must fit in to switch back.
RATIO, HEADROOM = 2.0, 0.6
#: Frames shown in one pass before switching back may be considered (doubled after each switch back that failed).
MIN_DWELL = 20
#: Weight of the newest frame in the running means of a frame's cost and of the camera's frame interval.
SMOOTHING = 0.2


class PassChoice:
    """Chooses, frame by frame, whether a temporal backbone's display denoises in one pass or two.

    Used from the one thread that denoises the display (:class:`~livedenoise.acquisition.display.DenoiseWorker`):
    :meth:`push` decides for a frame, denoises it with ``Denoiser.push`` and times it. ``mode``: True or False fixes
    the way (as ``[live] one_pass`` true/false always did); "auto" starts with two passes and switches as the module
    says. ``frames`` counts the frames shown each way; ``switches`` lists (frame number, "one pass"/"two passes").
    """

    def __init__(self, mode: OnePass, clock: Callable[[], float] = time.perf_counter) -> None:
        if mode not in (True, False, "auto"):
            raise ValueError(f"one_pass {mode!r} is invalid; expected true, false or \"auto\"")
        self.mode: OnePass = mode
        self._clock = clock
        self._one = mode is True
        self._recent: deque[bool] = deque(maxlen=RECENT)  # True: camera frames were skipped before this shown frame
        self._cost_s: float | None = None  # running mean of a one-pass frame's cost
        self._interval_s: float | None = None  # running mean of the camera's frame interval
        self._last_submitted: float | None = None
        self._since_switch = 0
        self._dwell = MIN_DWELL
        self._two_since: int | None = None  # frame number of the last switch back to two passes
        self.frames = {"one pass": 0, "two passes": 0}
        self.switches: list[tuple[int, str]] = []

    @property
    def one_pass(self) -> bool:
        """The way the next frame will be denoised (before :meth:`push` has seen it)."""
        return self._one

    def push(self, denoiser, raw: np.ndarray, stream: str, info: dict) -> np.ndarray:
        """Denoise a display frame of ``stream`` with ``denoiser`` (``Denoiser.push``) the way chosen for it.

        ``info``: the worker's (``skipped_before``: camera frames skipped since the frame shown before;
        ``submitted_at``: when the camera's frame was offered, on the clock of ``time.perf_counter``).
        A 2-D model ignores the way; so does a temporal model without a fusion stage (``Denoiser.push``)."""
        if self.mode == "auto":
            self._observe(info)
        one = self._one
        started = self._clock()
        if one:
            out = denoiser.push(raw, stream=stream, one_pass=True)
        else:  # behind on this frame: no second pass for it (the fusion alone, half the cost)
            out = denoiser.push(raw, stream=stream, second_pass=False if behind(info) else None)
        cost = self._clock() - started
        self.frames["one pass" if one else "two passes"] += 1
        if one:
            self._cost_s = cost if self._cost_s is None else (1 - SMOOTHING) * self._cost_s + SMOOTHING * cost
        return out

    def _observe(self, info: dict) -> None:
        """Update what is measured with the frame about to be denoised, and switch when the rules say so."""
        skipped = int(info.get("skipped_before") or 0)
        submitted = info.get("submitted_at")
        if submitted is not None:
            if self._last_submitted is not None and submitted > self._last_submitted:
                interval = (submitted - self._last_submitted) / (skipped + 1)
                self._interval_s = (interval if self._interval_s is None
                                    else (1 - SMOOTHING) * self._interval_s + SMOOTHING * interval)
            self._last_submitted = submitted
        self._recent.append(skipped > 0)
        self._since_switch += 1
        shown = sum(self.frames.values())
        if not self._one:
            if sum(self._recent) >= BEHIND_FRAMES:
                if self._two_since is not None and shown - self._two_since < 2 * self._dwell:
                    self._dwell *= 2  # switched back too early: wait longer next time
                self._switch(True, shown)
        elif (self._since_switch > self._dwell and not any(self._recent) and self._cost_s is not None
              and self._interval_s is not None and RATIO * self._cost_s <= HEADROOM * self._interval_s):
            self._two_since = shown
            self._switch(False, shown)

    def _switch(self, one: bool, shown: int) -> None:
        self._one = one
        self._since_switch = 0
        self._recent.clear()
        self.switches.append((shown, "one pass" if one else "two passes"))

    def summary(self) -> dict:
        """For a session's report: the mode, frames shown each way, and the switches."""
        return {"mode": self.mode, **self.frames,
                "switches": [{"frame": n, "to": way} for n, way in self.switches]}


def describe_passes(summary: dict) -> str | None:
    """One line for a session's printout from :meth:`PassChoice.summary` (None for a 2-D backbone's empty one)."""
    if not summary:
        return None
    counts = [f"{summary.get(way, 0)} frames in {way}" for way in ("two passes", "one pass") if summary.get(way)]
    mode = {True: "one pass", False: "two passes", "auto": "auto"}.get(summary.get("mode"), str(summary.get("mode")))
    switches = summary.get("switches") or []
    said = ", ".join(f"to {s['to']} at shown frame {s['frame']}" for s in switches[:4])
    more = f" and {len(switches) - 4} more" if len(switches) > 4 else ""
    return (f"temporal display ({mode}): " + (", ".join(counts) or "no frames")
            + (f"; switched {said}{more}" if switches else ""))
