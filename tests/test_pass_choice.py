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
)


class _Recorder:
    """A stand-in for ``Denoiser.push`` that records how it was called and takes ``cost`` seconds of a fake clock."""

    def __init__(self, clock: list[float]) -> None:
        self.calls: list[dict] = []
        self.clock = clock
        self.cost = {True: 0.01, False: 0.02}

    def now(self) -> float:
        return self.clock[0]

    def push(self, raw, stream="live", *, second_pass=None, one_pass=False):
        self.calls.append({"stream": stream, "second_pass": second_pass, "one_pass": one_pass})
        self.clock[0] += self.cost[one_pass]
        return raw


def _run(choice: PassChoice, skips: list[int], interval_s: float, clock: list[float], den: _Recorder) -> list[bool]:
    """Show one frame per entry of ``skips`` (camera frames skipped before it), the camera ``interval_s`` apart;
    the ways the frames were denoised (True: one pass)."""
    ways = []
    for skipped in skips:
        clock[0] += interval_s * (skipped + 1) - den.cost[choice.one_pass]  # the camera's frames keep their pace
        choice.push(den, np.zeros((2, 2), np.float32), "display",
                    {"skipped_before": skipped, "submitted_at": clock[0]})
        ways.append(den.calls[-1]["one_pass"])
    return ways


def _auto() -> tuple[PassChoice, _Recorder, list[float]]:
    clock = [100.0]
    den = _Recorder(clock)
    return PassChoice("auto", clock=den.now), den, clock


def test_fixed_ways_never_change_and_two_passes_skip_the_second_on_a_frame_after_skipped_ones() -> None:
    for mode, want in ((True, True), (False, False)):
        choice, den, clock = _auto()
        choice = PassChoice(mode, clock=den.now)
        ways = _run(choice, [0, 3, 3, 3, 3, 0, 0], 0.05, clock, den)
        assert ways == [want] * 7 and choice.switches == []
        assert choice.summary()["one pass" if want else "two passes"] == 7
        assert describe_passes(choice.summary()) == f"temporal display ({'one pass' if want else 'two passes'}): " \
            f"7 frames in {'one pass' if want else 'two passes'}"
    # two passes: the frame after skipped ones runs the fusion alone (second_pass=False), the others the setting
    assert [c["second_pass"] for c in den.calls] == [None, False, False, False, False, None, None]
    with pytest.raises(ValueError, match="one_pass 'sometimes' is invalid"):
        PassChoice("sometimes")  # type: ignore[arg-type]


def test_auto_stays_in_two_passes_while_the_display_keeps_up_or_is_late_now_and_then() -> None:
    choice, den, clock = _auto()
    skips = [0] * 30
    for i in range(0, 30, 5):  # one late frame in five: fewer than BEHIND_FRAMES of any RECENT shown
        skips[i] = 1
    assert BEHIND_FRAMES > 2
    ways = _run(choice, skips, 0.05, clock, den)
    assert not any(ways) and choice.switches == []


def test_auto_switches_to_one_pass_once_the_display_has_fallen_behind() -> None:
    choice, den, clock = _auto()
    ways = _run(choice, [0, 0, 1, 0, 2, 1, 1, 1], 0.05, clock, den)
    # the third frame in ten shown after skipped camera frames switches it, that frame already in one pass
    assert ways == [False, False, False, False, False, True, True, True]
    assert choice.summary()["switches"] == [{"frame": 5, "to": "one pass"}]
    assert choice.summary()["one pass"] == 3 and choice.summary()["two passes"] == 5
    assert describe_passes(choice.summary()) == ("temporal display (auto): 5 frames in two passes, 3 frames in one "
                                                 "pass; switched to one pass at shown frame 5")
    assert describe_passes({}) is None  # a 2-D backbone


def test_auto_goes_back_to_two_passes_only_when_they_would_fit_with_room_to_spare() -> None:
    # one pass takes 10 ms; two passes, estimated at RATIO of that, fit HEADROOM of a 50 ms camera interval
    assert RATIO * 0.01 <= HEADROOM * 0.05
    choice, den, clock = _auto()
    _run(choice, [1, 1, 1], 0.05, clock, den)
    assert choice.one_pass
    ways = _run(choice, [0] * (MIN_DWELL + 5), 0.05, clock, den)
    back = ways.index(False)
    assert back == MIN_DWELL  # the first frame after MIN_DWELL shown in one pass since the switch
    assert not any(ways[back:])
    # with a camera interval two passes would not fit into (RATIO x 10 ms > HEADROOM x 25 ms) it stays in one pass
    choice, den, clock = _auto()
    assert RATIO * 0.01 > HEADROOM * 0.025
    ways = _run(choice, [1, 1, 1] + [0] * (3 * MIN_DWELL), 0.025, clock, den)
    assert all(ways[2:]) and len(choice.switches) == 1


def test_a_display_that_falls_behind_again_soon_after_going_back_waits_twice_as_long() -> None:
    choice, den, clock = _auto()
    _run(choice, [1, 1, 1] + [0] * (MIN_DWELL + 1), 0.05, clock, den)
    assert [s[1] for s in choice.switches] == ["one pass", "two passes"]
    _run(choice, [1, 1, 1], 0.05, clock, den)  # behind again at once
    assert choice.one_pass
    ways = _run(choice, [0] * (3 * MIN_DWELL), 0.05, clock, den)
    assert ways.index(False) == 2 * MIN_DWELL
