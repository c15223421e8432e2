"""livedenoise as a pymmcore-plus MDA output handler: 2 channels x 3 z x 2 positions x 5 time points.

Runs on the simulated microscope (no hardware needed):

    python examples/attach_mda.py -o /tmp/attach-mda
    python examples/attach_mda.py -o /tmp/attach-mda --show     # with the raw | denoised viewer
    python examples/attach_mda.py -o /tmp/attach-mda --calibrate 3   # first adapt each channel on 3 other fields
    python examples/attach_mda.py -o /tmp/attach-mda --model temporal   # fused with neighbouring time points

Raw frames go to pymmcore-plus's own OME-Zarr writer exactly as acquired; livedenoise's handler
denoises every frame in the background into an NDTiff dataset with named axes (time, channel, z,
position). On a real microscope use your ``CMMCorePlus`` (``core.loadSystemConfiguration("my.cfg")``)
and your channel group. With napari-micromanager, connect the same handler to the MDA it starts:
``with mda_listeners_connected(handler, mda_events=core.mda.events): ...``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import useq
from _truth import RecordedTruth, TruthScores
from _viewer import run_example

from livedenoise.attach import MDADenoiser
from simulators.core import LIGHT_GROUP, spread_positions, start_simulated_core


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=None, help="folder for raw.ome.zarr and denoised/")
    parser.add_argument("--model", default="fast", help="model for every channel (shipped name or .safetensors)")
    parser.add_argument("--time-points", type=int, default=5)
    parser.add_argument("--recorded-window", choices=("centred", "causal"), default="centred",
                        help="with a temporal model: record each frame fused with the frames of its field before and "
                             "after it (centred, default) or before it only, as displayed (causal)")
    parser.add_argument("--one-pass", nargs="?", const="on", choices=("auto", "on", "off"), default="auto",
                        help="with a temporal model: display each frame denoised in two passes while the display keeps "
                             "up and in one while it falls behind (auto, default), always in one pass (on: its "
                             "motion-compensated average with the frames of its field before it; about half the two "
                             "passes' cost) or always in two (off)")
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="before the MDA, take reference pairs at N other positions with the sequence's channels "
                             "and adapt each channel's model (MDADenoiser.calibrate)")
    parser.add_argument("--calibrate-seconds", type=float, default=30.0, help="fine-tuning budget per channel")
    parser.add_argument("--show", action="store_true", help="open livedenoise's raw | denoised viewer while acquiring")
    parser.add_argument("--screenshot", type=Path, help="with --show: save the viewer here at the end")
    args = parser.parse_args(argv)
    out = args.output or Path(tempfile.mkdtemp(prefix="livedenoise-mda-"))
    out.mkdir(parents=True, exist_ok=True)

    core = start_simulated_core(register_pycromanager=False)  # on a real microscope: your CMMCorePlus
    positions = spread_positions(core.microscope.config, 2 + args.calibrate)
    calibration_positions, positions = positions[2:], positions[:2]  # calibrate on fields the MDA does not image
    sequence = useq.MDASequence(
        time_plan={"interval": 0, "loops": args.time_points},
        channels=[{"config": "5%", "group": LIGHT_GROUP}, {"config": "20%", "group": LIGHT_GROUP}],
        z_plan={"range": 2, "step": 1},
        stage_positions=[(x, y, 0.0) for x, y in positions],
        axis_order="tpcz",
    )
    scores = TruthScores(core.microscope)  # your display callback here (it gets each shown raw | denoised frame)
    recorded = RecordedTruth(core.microscope, sequence)  # the truth of every frame, to score what was saved

    def acquire(display):
        handler = MDADenoiser(args.model, output=out / "denoised", display=display,
                              recorded_window=args.recorded_window,
                              one_pass={"on": True, "off": False}.get(args.one_pass, "auto"))
        if calibration_positions:
            futures = handler.calibrate(core, sequence, calibration_positions, average=8,
                                        time_budget_s=args.calibrate_seconds)
            for channel, future in futures.items():
                a = future.result()  # waits here so that the MDA below starts with the adapted models
                print(f"calibration, channel {channel}: {a.steps} steps, "
                      + ("swapped in" if a.swapped else f"kept the current model ({a.reason})"))
        core.mda.events.frameReady.connect(recorded.frameReady)  # this MDA's frames only (not the calibration's)
        try:
            core.mda.run(sequence, output=[str(out / "raw.ome.zarr"), handler])  # returns once every frame is written
        finally:
            core.mda.events.frameReady.disconnect(recorded.frameReady)
        return handler.result

    # with --show, as in napari-micromanager: the MDA runs in a thread, Qt's loop in the main one
    report = run_example(acquire, scores, show=args.show, title="livedenoise attached to a pymmcore-plus MDA",
                         screenshot=args.screenshot)
    print(report.summary())
    for channel, info in report.channels.items():
        print(f"  channel {channel}: {info['model']}, {info['frames_recorded']} frames; {info['noise_model']}")
    print("\n".join(scores.lines()))
    print("\n".join(recorded.lines(report.denoised_path)))
    print(f"raw: {out / 'raw.ome.zarr'}\ndenoised: {report.denoised_path}")
    return 0 if report.frames_written == len(list(sequence)) and not report.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
