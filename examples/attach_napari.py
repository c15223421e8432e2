"""livedenoise in napari, as with napari-micromanager: the "Live denoise" widget attached to a pymmcore-plus core.

Runs on the simulated microscope (no hardware needed; needs the napari extra, ``pip install -e ".[napari]"``):

    python examples/attach_napari.py -o /tmp/attach-napari                 # a napari window; close it to finish
    python examples/attach_napari.py -o /tmp/attach-napari --calibrate 2   # first calibrate both channels
    python examples/attach_napari.py -o /tmp/attach-napari --headless      # no window (what the tests run)

The widget listens to the core's MDA events; here a 2-channel x 3-time-point MDA is started in a thread, as
napari-micromanager's MDA widget starts one, while napari's event loop runs. The newest denoised frame is shown in
the layer "livedenoise: denoised (live)" and every frame is recorded. With napari-micromanager, open the widget from
Plugins > livedenoise > Live denoise: it attaches to ``CMMCorePlus.instance()``, the core napari-micromanager drives.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import napari
import useq

from livedenoise.napari_plugin.live import LAYER_NAME, LiveDenoiseWidget
from simulators.core import LIGHT_GROUP, start_simulated_core


def wait(app, alive, timeout: float = 600.0) -> None:
    """Run napari's event loop until ``alive()`` is false (the frames of an MDA in a thread arrive through it)."""
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=None, help="folder for the denoised datasets")
    parser.add_argument("--model", default="fast", help="shipped name, .safetensors or Model Zoo .zip")
    parser.add_argument("--time-points", type=int, default=3)
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="first take reference pairs at N fields beside the current one and adapt each channel")
    parser.add_argument("--calibrate-seconds", type=float, default=20.0, help="fine-tuning budget per channel")
    parser.add_argument("--headless", action="store_true", help="no window; exit when the MDA is recorded")
    args = parser.parse_args(argv)
    out = args.output or Path(tempfile.mkdtemp(prefix="livedenoise-napari-"))

    app = napari.qt.get_qapp()  # first: a core made while a Qt app runs gets Qt signals, as in napari-micromanager
    core = start_simulated_core(register_pycromanager=False)  # with napari-micromanager: CMMCorePlus.instance()
    if args.headless:  # napari's model without a window (a window needs OpenGL, which a headless machine lacks)
        viewer = napari.components.ViewerModel(title="livedenoise: live denoise")
        widget = LiveDenoiseWidget(viewer, core=core)
    else:
        viewer = napari.Viewer(title="livedenoise: live denoise")
        widget = LiveDenoiseWidget(viewer, core=core)
        viewer.window.add_dock_widget(widget, name="Live denoise", area="right")
    widget.model.setText(args.model)
    widget.output.setText(str(out))
    channels = ["5%", "20%"]
    if args.calibrate:
        widget.channels.setText(",".join(channels))
        widget.fields.setValue(args.calibrate)
        widget.average.setValue(8)
        widget.seconds.setValue(args.calibrate_seconds)
        thread = widget.calibrate()
        wait(app, thread.is_alive)
        widget.refresh()
        print(widget.status.text())
    widget.button.setChecked(True)
    if not widget.attached:
        print(widget.status.text())
        return 1
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": args.time_points},
                                channels=[{"config": c, "group": LIGHT_GROUP} for c in channels])
    mda = core.run_mda(sequence)  # in a thread, as napari-micromanager runs it
    wait(app, mda.is_alive)
    wait(app, lambda: widget.last_report is None, timeout=60)  # the sequence's end arrives through the event loop
    widget.wait_until_recorded()  # the recording is finished in a thread of its own
    widget.refresh()
    report = widget.last_report
    print(widget.status.text())
    if report is None:
        return 1
    for channel, info in report.channels.items():
        print(f"  channel {channel}: {info['model']}, {info['frames_recorded']} frames recorded")
    shown = [layer.name for layer in viewer.layers if layer.name.startswith(LAYER_NAME)]  # one layer per channel
    ok = report.frames_written == len(list(sequence)) and not report.errors and bool(shown)
    if not args.headless:
        napari.run()
        viewer.close()
    widget.button.setChecked(False)
    core.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
