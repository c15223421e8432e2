"""The live display's pace in each phase of a session: before, while and after fine-tuning.

Why: a session's whole-run frame rate mixes two regimes. While the model is fine-tuned in the background, training
and the display share the CPU; once fine-tuning has ended, the display has the machine to itself. A microscopist
needs both numbers: what the viewer shows during calibration's fine-tune, and what it shows for the rest of the
experiment. This module only does the bookkeeping, from timestamps the session records. A frame's phase is the one
it was acquired in: a frame acquired before the fine-tune ended and shown after it counts where it was acquired.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHASES = ("before fine-tuning", "while fine-tuning", "after fine-tuning")
#: The one phase of a session that never fine-tuned.
NO_FINETUNE = "without fine-tuning"


@dataclass(frozen=True)
class ShownFrame:
    """One frame the display showed: when it was acquired (``time.perf_counter``), how late it was shown, and how
    many frames the display had skipped in the session up to then (cumulative)."""

    acquired_at: float
    latency_s: float
    dropped_so_far: int


def _clamp(t: float, lo: float, hi: float) -> float:
    return min(max(t, lo), hi)


def display_phases(shown: list[ShownFrame], acquired_at: list[float], live_span: tuple[float, float],
                   finetune_span: tuple[float, float | None] | None) -> dict[str, dict]:
    """Per phase: seconds, camera frames and fps, frames shown and fps, frames skipped, mean latency (ms).

    A frame belongs to the phase it was acquired in, shown or not. ``acquired_at``: the acquisition time of every
    camera frame. ``live_span``: (start, end) of live imaging. ``finetune_span``: (start, end) of the background
    fine-tune, ``end`` None while it runs, None when there was none (one phase, "without fine-tuning"). Phases with
    no time in the live span are left out.
    """
    start, end = live_span
    if finetune_span is None:
        bounds = {NO_FINETUNE: (start, end)}
    else:
        ft_start = _clamp(finetune_span[0], start, end)
        ft_end = _clamp(end if finetune_span[1] is None else finetune_span[1], start, end)
        bounds = {PHASES[0]: (start, ft_start), PHASES[1]: (ft_start, ft_end), PHASES[2]: (ft_end, end)}
    out: dict[str, dict] = {}
    acquired = np.asarray(acquired_at, dtype=float)
    names = [name for name, (lo, hi) in bounds.items() if hi > lo]
    for name in names:
        lo, hi = bounds[name]
        seconds = hi - lo
        last = name == names[-1]  # the last phase keeps what was acquired at the very end
        in_phase = [f for f in shown if lo <= f.acquired_at < hi or (last and f.acquired_at >= hi)]
        before = [f.dropped_so_far for f in shown if f.acquired_at < lo]
        dropped = (in_phase[-1].dropped_so_far - (before[-1] if before else 0)) if in_phase else 0
        n_camera = int(np.count_nonzero((acquired >= lo) & ((acquired < hi) | last)))
        out[name] = {"seconds": round(seconds, 3), "frames_acquired": n_camera,
                     "camera_fps": n_camera / seconds, "frames_denoised": len(in_phase),
                     "denoised_fps": len(in_phase) / seconds, "frames_dropped": dropped,
                     "mean_latency_ms": float(np.mean([f.latency_s for f in in_phase]) * 1000) if in_phase else None}
    return out


def describe_phases(phases: dict[str, dict]) -> str | None:
    """One line for a session's summary, or None when there is only one phase (the totals say it all)."""
    if len(phases) < 2:
        return None
    parts = []
    for name, p in phases.items():
        latency = f", mean latency {p['mean_latency_ms']:.0f} ms" if p.get("mean_latency_ms") is not None else ""
        parts.append(f"{name} {p['denoised_fps']:.1f} fps shown of {p['camera_fps']:.1f} acquired "
                     f"({p['seconds']:.1f} s{latency}, {p['frames_dropped']} skipped)")
    return "display by phase: " + "; ".join(parts)
