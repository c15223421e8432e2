"""The display's pace split into before / while / after fine-tuning (livedenoise.acquisition.phases)."""
from __future__ import annotations

import pytest

from livedenoise.acquisition.phases import ShownFrame, describe_phases, display_phases
from livedenoise.commands.demo import outcome_lines


def _session(fps_while: float, fps_after: float) -> tuple[list[ShownFrame], list[float]]:
    """Live from t=10 to t=20 with a 20 fps camera; fine-tuning from t=8 to t=14; the display skips every other
    frame while fine-tuning and none after."""
    acquired = [10 + i / 20 for i in range(200)]
    shown, dropped = [], 0
    for k in range(round(4 * fps_while)):  # t = 10 .. 14
        dropped += round(20 / fps_while) - 1
        shown.append(ShownFrame(10 + k / fps_while, 0.2, dropped))
    for k in range(round(6 * fps_after)):  # t = 14 .. 20
        dropped += round(20 / fps_after) - 1
        shown.append(ShownFrame(14 + k / fps_after, 0.05, dropped))
    return shown, acquired


def test_phases_split_frames_skips_and_latency() -> None:
    shown, acquired = _session(10, 20)
    phases = display_phases(shown, acquired, (10.0, 20.0), (8.0, 14.0))
    assert list(phases) == ["while fine-tuning", "after fine-tuning"]  # live started after fine-tuning had begun
    during, after = phases["while fine-tuning"], phases["after fine-tuning"]
    assert during["seconds"] == pytest.approx(4.0) and after["seconds"] == pytest.approx(6.0)
    assert during["denoised_fps"] == pytest.approx(10, abs=0.3) and after["denoised_fps"] == pytest.approx(20, abs=0.3)
    assert during["camera_fps"] == pytest.approx(20, abs=0.3) and after["camera_fps"] == pytest.approx(20, abs=0.3)
    assert during["frames_dropped"] == 40 and after["frames_dropped"] == 0
    assert during["mean_latency_ms"] == pytest.approx(200) and after["mean_latency_ms"] == pytest.approx(50)
    assert during["frames_acquired"] + after["frames_acquired"] == len(acquired)
    line = describe_phases(phases)
    assert line is not None and "while fine-tuning 10.0 fps shown of 20.0 acquired" in line
    assert "after fine-tuning 20.0 fps" in line and "mean latency 50 ms" in line


def test_a_frame_counts_in_the_phase_it_was_acquired_in() -> None:
    # acquired at 13.9 s, while fine-tuning, and shown at 14.3 s, after it: it is the fine-tune phase's frame
    late = [ShownFrame(13.9, 0.4, 0), ShownFrame(14.5, 0.05, 0)]
    phases = display_phases(late, [13.9, 14.5], (10.0, 20.0), (8.0, 14.0))
    assert phases["while fine-tuning"]["frames_denoised"] == 1 and phases["after fine-tuning"]["frames_denoised"] == 1
    assert phases["while fine-tuning"]["mean_latency_ms"] == pytest.approx(400)


def test_fine_tune_starting_mid_session_and_still_running() -> None:
    shown, acquired = _session(20, 20)
    phases = display_phases(shown, acquired, (10.0, 20.0), (15.0, None))
    assert list(phases) == ["before fine-tuning", "while fine-tuning"]  # still running at the end: no "after"
    assert phases["before fine-tuning"]["seconds"] == pytest.approx(5.0)
    assert sum(p["frames_denoised"] for p in phases.values()) == len(shown)
    # a frame acquired as live ended still counts, in the last phase there is
    tail = display_phases([*shown, ShownFrame(20.0, 0.05, shown[-1].dropped_so_far)], [*acquired, 20.0],
                          (10.0, 20.0), (15.0, None))
    assert tail["while fine-tuning"]["frames_denoised"] == phases["while fine-tuning"]["frames_denoised"] + 1
    assert tail["while fine-tuning"]["frames_acquired"] == phases["while fine-tuning"]["frames_acquired"] + 1


def test_no_fine_tune_is_one_phase_and_no_extra_line() -> None:
    shown, acquired = _session(20, 20)
    phases = display_phases(shown, acquired, (10.0, 20.0), None)
    assert list(phases) == ["without fine-tuning"] and phases["without fine-tuning"]["frames_denoised"] == len(shown)
    assert describe_phases(phases) is None
    assert display_phases([], [], (10.0, 10.0), None) == {}  # no live time: nothing to report


def test_demo_summary_prints_the_phases() -> None:
    shown, acquired = _session(10, 20)
    report = {"finetune": None, "frames_acquired": 200, "camera_fps": 20.0, "frames_denoised": len(shown),
              "denoised_fps": 15.0, "mean_latency_ms": 110.0, "frames_dropped": 40, "frames_written": 200,
              "display_phases": display_phases(shown, acquired, (10.0, 20.0), (8.0, 14.0))}
    lines = outcome_lines(report)
    assert lines[-1].startswith("display by phase: while fine-tuning 10.0 fps")
    assert outcome_lines({**report, "display_phases": {}})[-1].startswith("frames: 200 acquired")
    passes = {"mode": "auto", "one pass": 150, "two passes": 50, "switches": [{"frame": 50, "to": "one pass"}]}
    lines = outcome_lines({**report, "display_passes": passes})  # a temporal display: its ways, before the phases
    assert lines[-2] == ("temporal display (auto): 50 frames in two passes, 150 frames in one pass; switched to one "
                         "pass from shown frame 50") and lines[-1].startswith("display by phase: ")
