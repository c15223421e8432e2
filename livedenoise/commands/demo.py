"""`livedenoise demo`: the whole product on the simulated microscope, headless, with a summary."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from livedenoise.acquisition.pass_choice import describe_passes
from livedenoise.acquisition.phases import describe_phases
from livedenoise.acquisition.priority import GIVE_UP_SKIPPED
from livedenoise.commands._argtypes import int_range
from livedenoise.commands._session import (
    SIGNAL_EXIT,
    add_session_arguments,
    prepare_output,
    session_output,
    settings_from_args,
    stop_on_signals,
)

HELP = """\
Run a complete simulated session without hardware:

  1. CALIBRATE: collect low/high-SNR pairs at several stage positions of the simulated microscope
     (through pycromanager's real acquisition engine; raw frames saved as NDTiff);
  2. LIVE + FINE-TUNE: image live at low light, denoised by the pretrained backbone, while the
     backbone is fine-tuned on the pairs in the background;
  3. SWAP: the adapted model replaces the backbone between two frames; imaging continues;
  4. REPORT: PSNR/SSIM against the simulator's ground truth for raw, backbone and adapted model,
     fine-tune time, camera and denoised frame rates. Everything is saved under --output.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="simulated calibrate -> fine-tune -> live session with a summary",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_session_arguments(p)
    p.add_argument("--frames", type=int_range(1), help="live frames to acquire after the adapted model is swapped in")
    p.set_defaults(func=run, default_output=Path("runs/demo"))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from livedenoise.acquisition.session import LiveSession
    from livedenoise.camera_calibration import CameraCalibration
    from livedenoise.commands.simulated import pycromanager_backend
    from livedenoise.modelspec import load_model_spec
    from simulators.core import start_simulated_core, stop_simulated_core

    console = Console(soft_wrap=True)  # piped or logged: whole lines, not cut at 80 columns
    from livedenoise.device import select_device

    settings = settings_from_args(args).for_simulator()
    if select_device(args.device).type == "cpu":  # fail before anything is acquired or written
        from livedenoise.cpu_memory import keep_freed_memory

        keep_freed_memory()  # before any thread allocates: the session's threads then share the heap it keeps
    calibration = CameraCalibration.load(args.camera_calibration) if args.camera_calibration else None
    backbone = load_model_spec(settings.live.backbone)
    out = prepare_output(session_output(args.output, args.default_output, args.overwrite), args.overwrite)
    camera = settings.microscope.camera  # a CameraConfig once loaded (a preset name is resolved)
    camera_name = camera if isinstance(camera, str) else camera.name
    console.print(f"livedenoise demo: simulated {camera_name} camera, "
                  f"{settings.microscope.roi_width}x{settings.microscope.roi_height} px, "
                  f"{settings.microscope.exposure_ms:g} ms at {settings.microscope.light_power:g}% light; "
                  f"backbone '{backbone.name}', adaptation '{settings.live.mode}'; output {out}", markup=False)
    core = start_simulated_core(settings.microscope, realtime=True)
    last = {"state": None}

    def on_status(st) -> None:
        if st.state != last["state"]:
            last["state"] = st.state
            console.print(f"  -> {st.state.value.upper()}: {st.message}", markup=False)

    try:
        session = LiveSession(pycromanager_backend(core), settings, out, backbone=backbone, calibration=calibration,
                              device=args.device, on_status=on_status)
        with console.status("session running (calibration, background fine-tuning, live imaging)..."), \
                stop_on_signals(session.interrupt) as signalled:
            report = session.run(frames_after_swap=args.frames)
    finally:
        stop_simulated_core(core)
    from livedenoise.evaluate import machine_info
    from livedenoise.evaluate.report import json_safe

    record = {**report.__dict__, "machine": machine_info(args.device),  # every figure names its machine
              "command": command_line(),
              "session": {"backbone": backbone.name,
                          "roi": f"{settings.microscope.roi_width}x{settings.microscope.roi_height}",
                          "interval_ms": settings.live.interval_ms,
                          "frames_after_swap": args.frames if args.frames is not None else settings.live.frames}}
    (out / "report.json").write_text(json.dumps(json_safe(record), indent=2, default=str))
    print_report(console, report)
    if signalled["signal"] is not None:
        console.print(f"interrupted: {report.frames_acquired} raw frames saved and closed in {report.paths.get('raw')}")
        return SIGNAL_EXIT[signalled["signal"]]
    return 0 if not report.errors else 1


def command_line() -> str | None:
    """The ``livedenoise ...`` command this process runs, for the report; None when livedenoise was called from
    Python, where ``sys.argv`` belongs to another program."""
    prog = Path(sys.argv[0])
    if prog.name == "livedenoise" or (prog.parent.name == "livedenoise" and prog.name in ("__main__.py", "cli.py")):
        return shlex.join(["livedenoise", *sys.argv[1:]])
    return None


QUALITY_ROWS = (("raw", "raw (as acquired)"), ("backbone", "pretrained backbone"), ("adapted", "adapted model"))


def _why_it_stopped_waiting(shares: list[float]) -> str:
    """Why a live fine-tune stopped waiting for the display, from `finetune.display_skipped` (older reports: none)."""
    if len(shares) >= 2:
        last = " and ".join(f"{100 * s:.0f} %" for s in shares[-2:])
        return f"the display skipped {last} of its frames in two windows in a row although the fine-tune waited"
    return (f"the display skipped more than {100 * GIVE_UP_SKIPPED:.0f} % of its frames twice in a row although the "
            "fine-tune waited")


def outcome_lines(report: dict) -> list[str]:
    """What the fine-tuning and the live phase did, as plain lines (``SessionReport.__dict__`` or report.json)."""
    ft = report.get("finetune") or {}
    if ft:
        if report.get("swapped_at_frame") is not None:
            outcome = f"swapped in at frame {report['swapped_at_frame']}"
        else:  # one line saying why the backbone stayed: never a "swapped in at frame None"
            reason = (report.get("swap_criterion") or {}).get("reason") or (
                "not adapted" if not ft.get("adapted", True) else "not swapped in")
            outcome = f"{reason}; the backbone was used throughout"
        waited = (f", {ft['paused_s']:.1f} s of it waiting for the display"
                  if (ft.get("paused_s") or 0.0) >= 0.05 else "")  # what shows as 0.0 s is not said
        if ft.get("stopped_waiting"):
            waited += f" until it stopped waiting ({_why_it_stopped_waiting(ft.get('display_skipped') or [])})"
        first = (f"fine-tuning: {ft.get('steps')} steps in {ft.get('elapsed_s', 0):.1f} s{waited} "
                 f"(stopped: {ft.get('stopped')}, weights of step {ft.get('best_step')} kept), "
                 f"validation loss on the pairs' held-out strips {ft.get('initial_val_loss', 0):.4g} -> "
                 f"{ft.get('best_val_loss', 0):.4g}; swap decided on the calibration field kept out of it, scored as "
                 f"displayed: {outcome}")
    else:
        first = "fine-tuning: did not complete; the backbone was used throughout"
    lines = [first]
    shown = report.get("display_quality") or {}
    parts = [f"{label} {shown[key]:.2f} dB ({shown.get(f'{key}_frames', 0)} frames)"
             for key, label in (("backbone", "backbone"), ("adapted", "adapted")) if shown.get(key) is not None]
    if parts:  # what the viewer showed: for a temporal model, each frame fused with the frames before it
        lines.append("as displayed (PSNR of every 5th frame shown): " + ", ".join(parts))
    kept = report.get("recorded_quality") or {}
    parts = [f"{label} {kept[key]:.2f} dB ({kept.get(f'{key}_frames', 0)} frames)"
             for key, label in (("backbone", "backbone"), ("adapted", "adapted")) if kept.get(key) is not None]
    if parts:  # what was saved: with a temporal model, by default fused with the frames on both sides
        window = {"centred": ", each fused with the frames before and after it",
                  "causal": ", each fused with the frames before it"}.get(report.get("recorded_window") or "", "")
        lines.append(f"as recorded (PSNR of every 5th denoised frame saved{window}): " + ", ".join(parts))
    lines.append(f"frames: {report.get('frames_acquired')} acquired at {report.get('camera_fps', 0):.1f} fps, "
                 f"{report.get('frames_denoised')} denoised for display at {report.get('denoised_fps', 0):.1f} fps "
                 f"(mean latency {report.get('mean_latency_ms', 0):.0f} ms, {report.get('frames_dropped')} display "
                 f"frames skipped), {report.get('frames_written')} denoised frames recorded"
                 + (f" (the last of them {report['recorder_tail_s']:.0f} s after the camera stopped)"
                    if (report.get("recorder_tail_s") or 0.0) >= 1.0 else ""))
    passes = describe_passes(report.get("display_passes") or {})
    phases = describe_phases(report.get("display_phases") or {})
    advice = [f"advice: {line}" for line in report.get("advice") or []]
    return [*lines, *([passes] if passes else []), *([phases] if phases else []), *advice]


def headline(report: dict) -> str | None:
    """What the session achieved in one line: the denoised live frames against the raw ones, in PSNR."""
    q = report.get("quality") or {}
    if "raw" not in q:
        return None
    used = "adapted" if report.get("swapped_at_frame") is not None and "adapted" in q else "backbone"
    if used not in q:
        return None
    raw, den = q["raw"]["psnr"], q[used]["psnr"]
    what = "the adapted model" if used == "adapted" else "the pretrained backbone"
    return (f"achieved: {raw:.2f} -> {den:.2f} dB PSNR against the simulator's ground truth ({den - raw:+.2f} dB; "
            f"SSIM {q['raw']['ssim']:.3f} -> {q[used]['ssim']:.3f}) with {what}")


def summary_lines(report: dict) -> list[str]:
    """The whole outcome as plain text (the README's quick-start block is made from a committed report.json)."""
    q = report.get("quality") or {}
    lines = [f"Quality against ground truth ({q.get('frames', 0)} live frames, each denoised on its own)",
             f"{'image':<21} {'PSNR (dB)':>9} {'SSIM':>6}"]
    lines += [f"{label:<21} {q[key]['psnr']:>9.2f} {q[key]['ssim']:>6.3f}" for key, label in QUALITY_ROWS if key in q]
    top = headline(report)
    return [*lines, *([top] if top else []), *outcome_lines(report)]


def print_report(console, report) -> None:
    from rich.markup import escape
    from rich.table import Table

    q = report.quality
    table = Table(title=f"Quality against ground truth ({q.get('frames', 0)} live frames, each denoised on its own)")
    table.add_column("image")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    for key, label in QUALITY_ROWS:
        if key in q:
            table.add_row(label, f"{q[key]['psnr']:.2f}", f"{q[key]['ssim']:.3f}")
    console.print(table)
    top = headline(report.__dict__)
    if top:
        console.print(f"[bold]{top}[/]")
    # as plain text: lines name config keys like "[live] interval_ms", which rich would take for markup
    for line in outcome_lines(report.__dict__):
        console.print(line, markup=False)
    console.print(f"saved: raw {report.paths.get('raw')}, denoised {report.paths.get('denoised')}, "
                  f"model {report.paths.get('adapted_model') or 'not saved (the backbone was kept)'}", markup=False)
    for err in report.errors:
        console.print(f"[red]error:[/] {escape(err)}")
    logging.getLogger("livedenoise").debug("report: %s", report)
