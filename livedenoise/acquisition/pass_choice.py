"""How a temporal backbone's live display denoises each frame: two passes while it keeps up, one pass while it cannot.

The temporal backbone's display frame costs two 2-D passes (the frame's own, then its motion-compensated average
with the frames before it: :mod:`livedenoise.second_pass`), about 2.2x a 2-D frame on a CPU; one pass
(:mod:`livedenoise.one_pass`) costs about 1.15x, is 0.3 dB lower on the simulator's time-lapses and as good on real
structure. Where the CPU keeps up with the two passes they are the better display; where it does not, the display
skips camera frames, and one pass shows more of them, sooner, at the same quality as displayed (the quick start's
512² sessions: 8.5-8.8 against 6.0-6.7 frames/s, always in one pass). ``[live] one_pass = "auto"`` (the default)
lets the display choose, from what it measures: it switches to one pass once it has skipped camera frames before
``BEHIND_FRAMES`` of the last ``RECENT`` frames it showed (one late frame, a fine-tune starting, a garbage collection,
does not switch it), and back to two passes once it has shown ``MIN_DWELL`` frames in one pass without falling behind
and a two-pass frame would take at most ``HEADROOM`` of the frame interval (the median of the camera's recent ones, or
the display's rate cap where that is longer); the two-pass frame's cost is estimated from the one-pass frames' and
the ratio of the two measured in the session. A display that falls behind again soon after switching back waits
twice as long before the next try, so it never alternates frame by frame.

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
#: A two-pass frame's cost in one-pass frames until both have been measured in the session (measured 1.9-2.0 at 512²
#: and 2048²: README "One pass for the live display"), the bounds of the measured ratio, and the share of the frame
#: interval (the camera's, or the display's rate cap where that is longer) a two-pass frame must fit to switch back.
RATIO, RATIO_BOUNDS, HEADROOM = 2.0, (1.2, 3.0), 0.85
#: Frames shown in one pass before switching back may be considered: doubled (up to ``MAX_DWELL``) after each switch
#: back that fell behind again within twice that many frames, back to ``MIN_DWELL`` after one that held.
MIN_DWELL, MAX_DWELL = 20, 160
#: Weight of the newest frame in the running means of the frames' costs.
SMOOTHING = 0.2


def effective_mode(one_pass: OnePass, second_pass: bool) -> OnePass:
    """The display's way for ``[live] one_pass`` and ``second_pass``: without the second pass, "auto" keeps the fusion
    of the frames' 2-D results throughout (it costs about what one pass costs, so there is nothing to switch to)."""
    return one_pass if second_pass else one_pass is True


class PassChoice:
    """Chooses, frame by frame, whether a temporal backbone's display denoises in one pass or two.

    Used from the one thread that denoises the display (:class:`~livedenoise.acquisition.display.DenoiseWorker`),
    for every stream it shows (one CPU, one budget): :meth:`push` decides for a frame, denoises it with
    ``Denoiser.push`` and times it. ``mode``: True or False fixes the way (as ``[live] one_pass`` true/false always
    did); "auto" starts with two passes and switches as the module says. ``min_interval_s``: the display's rate cap
    (``1 / max_fps``), below which a frame interval never counts. ``frames`` counts the frames shown each way;
    ``switches`` lists (the number of the first frame shown the new way, counted from 1, "one pass"/"two passes").
    Frames of 2-D models are denoised as they are and not counted. ``on_switch`` is called (in the display's thread)
    each time the way changes: the session bumps its display worker's ``stats.ways``, so that the fine-tune, which
    waits for the display while it keeps up, judges the new pace afresh (``YieldToDisplay``).
    """

    def __init__(self, mode: OnePass, clock: Callable[[], float] = time.perf_counter,
                 min_interval_s: float = 0.0, on_switch: Callable[[], None] | None = None) -> None:
        if not (isinstance(mode, bool) or mode == "auto"):
            raise ValueError(f"one_pass {mode!r} is invalid; expected true, false or \"auto\"")
        self.mode: OnePass = mode
        self._clock = clock
        self._min_interval_s = float(min_interval_s)
        self._on_switch = on_switch
        self._one = mode is True
        self._recent: deque[bool] = deque(maxlen=RECENT)  # True: camera frames were skipped before this shown frame
        self._intervals: deque[float] = deque(maxlen=2 * RECENT)  # the camera's recent frame intervals
        self._cost_s: dict[bool, float] = {}  # running mean cost of a frame in one pass (True) / two passes (False)
        self._last_submitted: float | None = None
        self._since_switch = 0
        self._dwell = MIN_DWELL
        self._two_since: int | None = None  # frames shown before the last switch back to two passes
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
        A temporal model without a fusion stage ignores the way (``Denoiser.push``)."""
        if not denoiser.is_temporal:
            return denoiser.push(raw, stream=stream)
        if self.mode == "auto":
            self._observe(info)
        one = self._one
        late = behind(info)
        started = self._clock()
        if one:
            out = denoiser.push(raw, stream=stream, one_pass=True)
        else:  # behind on this frame: no second pass for it (the fusion alone, half the cost)
            out = denoiser.push(raw, stream=stream, second_pass=False if late else None)
        cost = self._clock() - started
        self.frames["one pass" if one else "two passes"] += 1
        if one or not late:  # a frame without its second pass says nothing about the two passes' cost
            old = self._cost_s.get(one)
            self._cost_s[one] = cost if old is None else (1 - SMOOTHING) * old + SMOOTHING * cost
        return out

    def _two_pass_estimate(self) -> float | None:
        """What a two-pass frame would cost now: the one-pass frame's running cost times the ratio of the two ways
        measured in this session (``RATIO`` until both were), None before any one-pass frame."""
        one, two = self._cost_s.get(True), self._cost_s.get(False)
        if one is None:
            return None
        ratio = RATIO if two is None else min(max(two / one, RATIO_BOUNDS[0]), RATIO_BOUNDS[1])
        return ratio * one

    def _observe(self, info: dict) -> None:
        """Update what is measured with the frame about to be denoised, and switch when the rules say so."""
        skipped = int(info.get("skipped_before") or 0)
        submitted = info.get("submitted_at")
        if submitted is not None:
            if self._last_submitted is not None and submitted > self._last_submitted:
                self._intervals.append((submitted - self._last_submitted) / (skipped + 1))
            self._last_submitted = submitted
        self._recent.append(skipped > 0)
        self._since_switch += 1
        shown = sum(self.frames.values())
        if not self._one:
            if sum(self._recent) >= BEHIND_FRAMES:
                if self._two_since is not None:  # back too early: wait longer next time; a stay that held resets it
                    self._dwell = (min(2 * self._dwell, MAX_DWELL) if shown - self._two_since < 2 * self._dwell
                                   else MIN_DWELL)
                self._switch(True, shown)
        elif self._since_switch >= self._dwell and not any(self._recent) and self._intervals:
            estimate = self._two_pass_estimate()
            budget = max(float(np.median(self._intervals)), self._min_interval_s)
            if estimate is not None and estimate <= HEADROOM * budget:
                self._two_since = shown
                self._switch(False, shown)

    def _switch(self, one: bool, shown: int) -> None:
        self._one = one
        self._since_switch = 0
        self._recent.clear()
        self.switches.append((shown + 1, "one pass" if one else "two passes"))
        if self._on_switch is not None:
            self._on_switch()

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
    said = ", ".join(f"to {s['to']} from shown frame {s['frame']}" for s in switches[:4])
    more = f" and {len(switches) - 4} more" if len(switches) > 4 else ""
    return (f"temporal display ({mode}): " + (", ".join(counts) or "no frames")
            + (f"; switched {said}{more}" if switches else ""))
