"""What to change when a live session's display cannot keep up with its camera, said at the end of the session.

The display shows the newest frame and skips the others when the model is slower than the camera (nothing is
lost: every frame is recorded). A user who sees 4 frames a second of a 10 frames/s camera should not have to read
the README to learn why, nor which of the session's own settings would help on this machine. So a session's report
carries ``advice``: one sentence of diagnosis with the options that apply to *this* session (each with the cost the
README measured), and one on a recorder that finished long after the camera stopped. Nothing here changes a setting:
every option trades quality or field of view, and that choice is the user's.
"""
from __future__ import annotations

from dataclasses import dataclass

from livedenoise.acquisition.pass_choice import OnePass
from livedenoise.acquisition.phases import NO_FINETUNE, PHASES

#: The display keeps up when it shows at least this share of the camera's frames.
KEEP_UP_SHARE = 0.9
#: A phase with fewer camera frames says too little to judge.
MIN_FRAMES = 20
#: A recorder that finishes later than this after the camera stopped is worth a sentence.
RECORDER_TAIL_S = 30.0
#: The shipped backbone one step cheaper than each shipped backbone (by checkpoint name), and what the README
#: measured for the step.
CHEAPER_BACKBONE = {
    "backbone-temporal": ("temporal-lite", "about half the cost per frame, 0.6 dB lower live on simulated time-lapses"),
    "backbone-temporal-standard": ("temporal", "about a third of the cost per frame"),
    "backbone-standard": ("fast", "a quarter to a half of the cost per frame, 0.3 dB lower on the dev pairs"),
    "backbone-fast": ("lite", "about 0.4x the cost per frame, 0.1 dB lower on the dev pairs"),
}


@dataclass(frozen=True)
class SessionFacts:
    """What the advice depends on, from the session (not from the report, which does not name them all)."""

    backbone: str  #: the backbone checkpoint's name, e.g. "backbone-temporal"
    temporal: bool
    second_pass: bool  #: a temporal backbone's second pass is on
    #: how a temporal backbone's display denoises ([live] one_pass): True one pass, False two, "auto" as it measures
    one_pass: OnePass
    precision: str  #: the live denoiser's arithmetic ("fp32", "bf16", "fp16")
    device: str  #: "cpu", "cuda", "mps"
    bf16_units: bool  #: the CPU multiplies bf16 matrices in hardware (Intel AMX)


def _judged_phase(phases: dict[str, dict]) -> tuple[str, dict] | None:
    """The phase the user watches longest without a fine-tune beside it (after it, or a session without one);
    else the phase while it ran; None when no phase has enough frames to judge."""
    for name in (PHASES[2], NO_FINETUNE, PHASES[1]):
        phase = phases.get(name)
        if phase and phase.get("frames_acquired", 0) >= MIN_FRAMES and phase.get("camera_fps", 0) > 0:
            return name, phase
    return None


def keep_up_advice(phases: dict[str, dict], facts: SessionFacts, recorder_tail_s: float = 0.0,
                   frame: tuple[int, int] | None = None) -> list[str]:
    """Sentences for the session's report: why the display fell behind and what would help here, and why the
    recording took long to finish; empty when the display kept up and the recorder finished soon after the camera.
    ``phases``: :func:`~livedenoise.acquisition.phases.display_phases`; ``frame``: (height, width) of the live
    frames."""
    advice = []
    judged = _judged_phase(phases)
    if judged is not None:
        name, phase = judged
        camera, shown = float(phase["camera_fps"]), float(phase["denoised_fps"])
        if shown < KEEP_UP_SHARE * camera:
            options = []
            if facts.device == "cpu" and facts.precision == "fp32" and facts.bf16_units:
                options.append("--precision bf16 (this CPU has bfloat16 matrix units: the network about twice as "
                               "fast, outputs within 5e-2 of the range of fp32's, see README \"Precision: bf16 on the "
                               "CPU\")")
            cheaper = CHEAPER_BACKBONE.get(facts.backbone)
            if cheaper is not None:
                options.append(f"--backbone {cheaper[0]} ({cheaper[1]})")
            if facts.temporal and facts.second_pass and facts.one_pass is False:
                options.append("--one-pass auto (the display in one 2-D pass per frame instead of two while it falls "
                               "behind: about 1.2x a 2-D frame's cost instead of 2.2x, 0.3-0.8 dB lower as displayed "
                               "on the simulator, as good on real structure, see README \"One pass for the live "
                               "display\")")
            if facts.temporal and facts.second_pass:
                options.append("--no-second-pass (display and recorder without the second pass: one 2-D pass per "
                               "frame each, about 0.6 dB lower live, see README \"Time-lapses\")")
            options.append("a smaller field of view or a slower camera ([live] interval_ms)")
            size = f"a {frame[1]}x{frame[0]} frame" if frame else "a frame"
            latency = phase.get("mean_latency_ms")
            advice.append(
                f"the display showed {shown:.1f} of {camera:.1f} frames/s {name}"
                + (f" (mean latency {latency:.0f} ms)" if latency is not None else "")
                + f": denoising {size} took longer than the {1000 / camera:.0f} ms between camera frames on this "
                "machine (every frame was still recorded). To keep up, try: " + "; ".join(options) + ".")
    if recorder_tail_s >= RECORDER_TAIL_S:
        advice.append(f"the denoised recording finished {recorder_tail_s:.0f} s after the camera stopped: the recorder "
                      "denoises every frame at a lower priority than the display and fell behind. [live] "
                      "save_denoised = false records the raw frames alone; `livedenoise denoise` on them afterwards "
                      "gives the denoised frames" + (" with the same windows" if facts.temporal else "") + ".")
    return advice
