"""The live display's pace in each phase of a session: before, while and after fine-tuning.

Why: a session's whole-run frame rate mixes two regimes. While the model is fine-tuned in the background, training
and the display share the CPU; once fine-tuning has ended, the display has the machine to itself. A microscopist
needs both numbers: what the viewer shows during calibration's fine-tune, and what it shows for the rest of the
experiment. This module only does the bookkeeping, from timestamps the session records.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHASES = ("before fine-tuning", "while fine-tuning", "after fine-tuning")


@dataclass(frozen=True)
class ShownFrame:
    """One frame the display showed: when (``time.perf_counter``), how late after acquisition, and how many
    frames the display had skipped in the session up to then (cumulative)."""

    shown_at: float
    latency_s: float
    dropped_so_far: int


def display_phases(shown: list[ShownFrame], acquired_at: list[float], live_span: tuple[float, float],
                   finetune_span: tuple[float, float | None] | None) -> dict[str, dict]:
    """Per phase: seconds, camera frames and fps, frames shown and fps, frames skipped, mean latency (ms).

    ``acquired_at``: the acquisition time of every camera frame. ``live_span``: (start, end) of live imaging.
    ``finetune_span``: (start, end) of the background fine-tune, ``end`` None while it runs, None when there was
    none. Phases with no time in the live span are left out, so a session without fine-tuning has one phase.
    """
    start, end = live_span
    if finetune_span is None:
        bounds = {"before fine-tuning": (start, end)}
    else:
        ft_start, ft_end = finetune_span
        ft_end = end if ft_end is None else ft_end
        bounds = {"before fine-tuning": (start, min(max(ft_start, start), end)),
                  "while fine-tuning": (min(max(ft_start, start), end), min(max(ft_end, start), end)),
                  "after fine-tuning": (min(max(ft_end, start), end), end)}
    out: dict[str, dict] = {}
    acquired = np.asarray(acquired_at, dtype=float)
    for name in PHASES:
        if name not in bounds:
            continue
        lo, hi = bounds[name]
        seconds = hi - lo
        if seconds <= 0:
            continue
        last = name == PHASES[-1] or hi >= end  # the last phase keeps frames shown just after the end
        in_phase = [f for f in shown if lo <= f.shown_at < hi or (last and f.shown_at >= hi)]
        before = [f.dropped_so_far for f in shown if f.shown_at < lo]
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
