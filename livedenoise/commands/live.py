"""`livedenoise live`: live denoising in a viewer, on the simulated microscope or a running Micro-Manager."""
from __future__ import annotations

import argparse
import threading
from pathlib import Path

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
Image live with on-the-fly denoising, raw | denoised side by side.

  livedenoise live --simulate          # no hardware: the simulated sCMOS microscope
  livedenoise live --mm                # a running Micro-Manager (enable Tools > Options > server port 4827)
  livedenoise live --mm-config my.cfg  # a Micro-Manager hardware configuration, driven by pymmcore-plus (no GUI)

Buttons: CALIBRATE collects low/high-SNR pairs at a few stage positions (or, in --mode self, nothing is
needed) and fine-tunes the backbone in the background while you keep imaging; the adapted model replaces
the backbone between two frames. START / STOP control live imaging; raw frames are always saved as
acquired (NDTiff under --output). "compare" shows the backbone instead of the adapted model.
--auto runs calibrate -> fine-tune -> live by itself and closes the window when done.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("live", help="live acquisition with a raw | denoised viewer", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--simulate", action="store_true", help="use the simulated microscope")
    src.add_argument("--mm", action="store_true", help="use a running Micro-Manager (pycromanager Java backend)")
    src.add_argument("--mm-config", type=Path, metavar="FILE",
                     help="load this Micro-Manager hardware configuration (.cfg) and acquire through pymmcore-plus")
    p.add_argument("--mm-path", type=Path, help="with --mm-config: folder of Micro-Manager's device adapters "
                   "(default: found by pymmcore-plus, e.g. after `mmcore install`)")
    p.add_argument("--backend", choices=["pycromanager", "pymmcore-plus"], default="pycromanager",
                   help="acquisition engine for --simulate (default pycromanager)")
    add_session_arguments(p)
    p.add_argument("--auto", action="store_true", help="run calibrate -> fine-tune -> live unattended, then close")
    p.add_argument("--frames", type=int_range(1), help="with --auto: live frames after the adapted model is swapped in")
    p.add_argument("--screenshot", type=Path, help="save a screenshot of the viewer here when the session ends")
    p.set_defaults(func=run, default_output=Path("runs/live"))


def make_backend(args: argparse.Namespace, settings):
    """The acquisition backend (and the simulated core to close, if any) for the chosen source."""
    if args.mm:
        from livedenoise.acquisition.pycromanager_backend import PycromanagerBackend

        return PycromanagerBackend(None), None
    if args.mm_config is not None:
        from livedenoise.acquisition.pymmcore_plus_backend import PymmcorePlusBackend, load_mm_configuration

        return PymmcorePlusBackend(load_mm_configuration(args.mm_config, args.mm_path)), None
    from livedenoise.commands.simulated import pycromanager_backend, pymmcore_plus_backend
    from simulators.core import start_simulated_core

    core = start_simulated_core(settings.microscope, realtime=True)
    if args.backend == "pymmcore-plus":
        return pymmcore_plus_backend(core), core
    return pycromanager_backend(core), core


def run(args: argparse.Namespace) -> int:
    from livedenoise.acquisition.session import LiveSession
    from livedenoise.camera_calibration import CameraCalibration
    from livedenoise.commands.demo import print_report
    from livedenoise.device import select_device
    from livedenoise.modelspec import load_model_spec
    from livedenoise.viewer import LiveViewer, create_app

    settings = settings_from_args(args)
    if not (args.mm or args.mm_config is not None):  # the simulated microscope: its illumination unless [live] sets one
        settings = settings.for_simulator()
    if select_device(args.device).type == "cpu":  # fail before anything is acquired or written
        from livedenoise.cpu_memory import keep_freed_memory

        keep_freed_memory()  # before any thread allocates: the session's threads then share the heap it keeps
    backbone = load_model_spec(settings.live.backbone)
    calibration = CameraCalibration.load(args.camera_calibration) if args.camera_calibration else None
    backend, core = make_backend(args, settings)
    out = prepare_output(session_output(args.output, args.default_output, args.overwrite), args.overwrite)
    print(f"livedenoise live: saving under {out}")
    app = create_app()
    viewer = LiveViewer(title="livedenoise live")
    session = LiveSession(backend, settings, out, backbone=backbone, calibration=calibration, device=args.device,
                          on_status=viewer.post_status,
                          on_frame=lambda f: viewer.post_frames(f.raw, f.denoised))
    result: dict = {}

    def in_background(fn) -> None:
        def job() -> None:
            try:
                fn()
            except Exception as exc:  # shown in the viewer's status line
                session._error(f"{exc.__class__.__name__}: {exc}")
        threading.Thread(target=job, daemon=True).start()

    def calibrate() -> None:
        if settings.live.mode == "pairs":
            pairs = session.calibrate()
            session.start_finetune([p.low for p in pairs], [p.high for p in pairs])
        if session._live_thread is None or not session._live_thread.is_alive():
            session.start_live()

    def stop() -> None:
        result["report"] = session.stop()

    viewer.on_calibrate = lambda: in_background(calibrate)
    viewer.on_start = lambda: in_background(lambda: session.start_live())
    viewer.on_stop = lambda: in_background(stop)
    viewer.on_compare = lambda show_backbone: session.show_adapted(not show_backbone)

    def residual(raw, den):
        from livedenoise.residual_check import residual_map

        return residual_map(raw, den, session.denoiser.normalizer if session.denoiser else None)

    viewer.residual_fn = residual
    viewer.show()
    from PySide6.QtCore import QTimer

    worker = None
    if args.auto:
        def auto() -> None:
            result["report"] = session.run(frames_after_swap=args.frames)

        worker = threading.Thread(target=auto, daemon=True)
        worker.start()
        timer = QTimer()
        timer.timeout.connect(lambda: (not worker.is_alive()) and app.quit())
        timer.start(200)
    # Qt's event loop runs in C++, where Python never sees Ctrl-C: a short timer hands control back to the
    # interpreter so the handler below can stop the session (camera first) and close the window.
    keepalive = QTimer()
    keepalive.timeout.connect(lambda: None)
    keepalive.start(200)

    def on_signal() -> None:
        session.interrupt()
        app.quit()

    try:
        with stop_on_signals(on_signal) as signalled:
            app.exec()
    finally:
        keepalive.stop()
        if worker is not None:
            worker.join(timeout=120)  # an interrupted run() stops the session itself
        if "report" not in result and session.state.value not in ("idle", "stopped"):
            result["report"] = session.stop()
        viewer.render_once()
        if args.screenshot:
            viewer.save_screenshot(args.screenshot)
        if core is not None:
            from simulators.core import stop_simulated_core

            stop_simulated_core(core)
    if "report" in result:
        from rich.console import Console

        print_report(Console(), result["report"])
    if signalled["signal"] is not None:
        print(f"interrupted: the session was stopped and its raw frames closed in {out}")
        return SIGNAL_EXIT[signalled["signal"]]
    return 0
