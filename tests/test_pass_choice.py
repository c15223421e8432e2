"""How a temporal display denoises each frame (``[live] one_pass``, :mod:`livedenoise.acquisition.pass_choice`):
two passes while it keeps up with the camera, one pass once it has fallen behind, back to two when they fit."""
from __future__ import annotations

import numpy as np
import pytest

from livedenoise.acquisition.pass_choice import (
    BEHIND_FRAMES,
    HEADROOM,
    MIN_DWELL,
    RATIO,
    PassChoice,
    describe_passes,
    effective_mode,
)


class _Recorder:
    """A stand-in for ``Denoiser.push`` that records how it was called and takes ``cost`` seconds of a fake clock."""

    is_temporal = True

    def __init__(self, clock: list[float], one: float = 0.01, two: float = 0.02, fusion: float = 0.011) -> None:
        self.calls: list[dict] = []
        self.clock = clock
        self.camera = clock[0]  # when the camera offered its latest frame
        self.cost = {True: one, False: two}
        self.fusion = fusion  # a two-pass frame that skips its second pass (behind): the fusion alone

    def now(self) -> float:
        return self.clock[0]

    def push(self, raw, stream="live", **kwargs):
        self.calls.append({"stream": stream, **kwargs})
        self.clock[0] += self.fusion if kwargs.get("second_pass") is False else self.cost[bool(kwargs.get("one_pass"))]
        return raw


def _run(choice: PassChoice, skips: list[int], interval_s: float, den: _Recorder) -> list[bool]:
    """Show one frame per entry of ``skips`` (camera frames skipped before it), the camera ``interval_s`` apart;
    the ways the frames were denoised (True: one pass)."""
    ways = []
    for skipped in skips:
        den.camera += interval_s * (skipped + 1)
        den.clock[0] = max(den.clock[0], den.camera)  # the display takes the frame once it is free
        choice.push(den, np.zeros((2, 2), np.float32), "display",
                    {"skipped_before": skipped, "submitted_at": den.camera})
        ways.append(bool(den.calls[-1].get("one_pass")))
    return ways


def _auto(one: float = 0.01, two: float = 0.02, **kwargs) -> tuple[PassChoice, _Recorder]:
    den = _Recorder([100.0], one, two)
    return PassChoice("auto", clock=den.now, **kwargs), den


def test_fixed_ways_never_change_and_two_passes_skip_the_second_on_a_frame_after_skipped_ones() -> None:
    for mode, want in ((True, True), (False, False)):
        den = _Recorder([0.0])
        choice = PassChoice(mode, clock=den.now)
        ways = _run(choice, [0, 3, 3, 3, 3, 0, 0], 0.05, den)
        assert ways == [want] * 7 and choice.switches == []
        way = "one pass" if want else "two passes"
        assert choice.summary()[way] == 7
        assert describe_passes(choice.summary()) == f"temporal display ({way}): 7 frames in {way}"
    # two passes: the frame after skipped ones runs the fusion alone (second_pass=False), the others the setting
    assert [c["second_pass"] for c in den.calls] == [None, False, False, False, False, None, None]
    for wrong in ("sometimes", 1, None):
        with pytest.raises(ValueError, match=f"one_pass {wrong!r} is invalid"):
            PassChoice(wrong)  # type: ignore[arg-type]
    # without the second pass "auto" keeps the fusion alone: it costs about one pass's cost, nothing to switch to
    assert effective_mode("auto", False) is False and effective_mode(True, False) is True
    assert effective_mode("auto", True) == "auto"


def test_frames_of_a_2d_model_are_denoised_as_they_are_and_not_counted() -> None:
    choice, den = _auto()
    den.is_temporal = False  # type: ignore[misc]
    _run(choice, [3, 3, 3, 3], 0.05, den)
    assert all(c == {"stream": "display"} for c in den.calls) and choice.summary()["two passes"] == 0
    assert choice.switches == []


def test_auto_stays_in_two_passes_while_the_display_keeps_up_or_is_late_now_and_then() -> None:
    choice, den = _auto()
    skips = [0] * 30
    for i in range(0, 30, 5):  # one late frame in five: fewer than BEHIND_FRAMES of any RECENT shown
        skips[i] = 1
    assert BEHIND_FRAMES > 2
    assert not any(_run(choice, skips, 0.05, den)) and choice.switches == []


def test_auto_switches_to_one_pass_once_the_display_has_fallen_behind() -> None:
    told: list[bool] = []
    choice, den = _auto(on_switch=lambda: told.append(choice.one_pass))
    ways = _run(choice, [0, 0, 1, 0, 2, 1, 1, 1], 0.05, den)
    assert told == [True]  # told once, after the way changed (the session then has the fine-tune judge it afresh)
    # the third frame in ten shown after skipped camera frames switches it, that frame already in one pass
    assert ways == [False, False, False, False, False, True, True, True]
    assert choice.summary()["switches"] == [{"frame": 6, "to": "one pass"}]  # the 6th frame shown, counted from 1
    assert choice.summary()["one pass"] == 3 and choice.summary()["two passes"] == 5
    assert describe_passes(choice.summary()) == ("temporal display (auto): 5 frames in two passes, 3 frames in one "
                                                 "pass; switched to one pass from shown frame 6")
    assert describe_passes({}) is None  # a 2-D backbone


def test_auto_goes_back_to_two_passes_only_when_they_would_fit_with_room_to_spare() -> None:
    # one pass takes 10 ms; two passes, estimated at RATIO of that (never measured here: every two-pass frame was
    # late), fit HEADROOM of a 50 ms camera interval
    assert RATIO * 0.01 <= HEADROOM * 0.05
    choice, den = _auto()
    _run(choice, [1, 1, 1], 0.05, den)
    assert choice.one_pass
    ways = _run(choice, [0] * (MIN_DWELL + 5), 0.05, den)
    assert ways.index(False) == MIN_DWELL - 1  # MIN_DWELL frames in one pass, the one that switched included
    assert not any(ways[MIN_DWELL - 1:])
    assert choice.switches == [(3, "one pass"), (3 + MIN_DWELL, "two passes")]
    # a camera interval two passes would not fit (RATIO x 10 ms > HEADROOM x 20 ms): it stays in one pass
    assert RATIO * 0.01 > HEADROOM * 0.02
    choice, den = _auto()
    ways = _run(choice, [1, 1, 1] + [0] * (3 * MIN_DWELL), 0.02, den)
    assert all(ways[2:]) and len(choice.switches) == 1
    # ... unless the display's rate cap leaves it more time per frame than the camera does
    choice, den = _auto(min_interval_s=0.1)
    ways = _run(choice, [1, 1, 1] + [0] * (3 * MIN_DWELL), 0.02, den)
    assert ways.index(False, 2) == MIN_DWELL + 2


def test_the_two_ways_cost_ratio_measured_in_the_session_replaces_the_assumed_one() -> None:
    # two passes cost 3x one pass here: measured on the frames that kept up (not on the late ones, which ran the
    # fusion alone), it keeps the display in one pass at a 33 ms camera interval, where the assumed RATIO would have
    # gone back
    assert RATIO * 0.01 <= HEADROOM * 0.033 < 3 * 0.01
    choice, den = _auto(two=0.03)
    ways = _run(choice, [0] * 5 + [1, 1, 1] + [0] * (3 * MIN_DWELL), 0.033, den)
    assert all(ways[7:]) and len(choice.switches) == 1
    choice, den = _auto(two=0.03)
    ways = _run(choice, [0] * 5 + [1, 1, 1] + [0] * (3 * MIN_DWELL), 0.05, den)  # 30 ms fits 85 % of 50 ms
    assert ways.index(False, 7) == 7 + MIN_DWELL


def test_a_display_that_falls_behind_again_soon_after_going_back_waits_twice_as_long() -> None:
    choice, den = _auto()
    _run(choice, [1, 1, 1] + [0] * MIN_DWELL, 0.05, den)
    assert [s[1] for s in choice.switches] == ["one pass", "two passes"]
    _run(choice, [1, 1, 1], 0.05, den)  # behind again at once
    assert choice.one_pass
    ways = _run(choice, [0] * (3 * MIN_DWELL), 0.05, den)
    assert ways.index(False) == 2 * MIN_DWELL - 1  # twice MIN_DWELL in one pass, the one that switched included
    # two passes that then held for long are a success: the next fall behind waits MIN_DWELL again
    _run(choice, [0] * (5 * MIN_DWELL) + [1, 1, 1], 0.05, den)
    assert choice.one_pass
    ways = _run(choice, [0] * (2 * MIN_DWELL), 0.05, den)
    assert ways.index(False) == MIN_DWELL - 1
