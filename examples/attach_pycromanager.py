"""livedenoise attached to your own pycromanager acquisition: 2 channels x 3 z x 2 positions x 5 time points.

Runs on the simulated microscope (no hardware needed):

    python examples/attach_pycromanager.py -o /tmp/attach-demo            # image_process_fn
    python examples/attach_pycromanager.py -o /tmp/attach-demo --saved    # image_saved_fn
    python examples/attach_pycromanager.py -o /tmp/attach-demo --show     # with the raw | denoised viewer

On a real microscope, replace the simulated core by your Micro-Manager (leave ``core`` out: pycromanager's
Java backend talks to the running Micro-Manager) and use your channel group and channel names. The
raw dataset is pycromanager's own NDTiff, saved exactly as acquired; the denoised frames go to a second
NDTiff dataset with the same axes.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _truth import TruthScores
from _viewer import run_example
from pycromanager import Acquisition, multi_d_acquisition_events

from livedenoise.attach import PycromanagerDenoiser
from simulators.core import LIGHT_GROUP, spread_positions, start_simulated_core


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for raw/ and denoised/ (default: a temporary one)")
    parser.add_argument("--saved", action="store_true",
                        help="hook in with image_saved_fn (denoise from what was saved)")
    parser.add_argument("--model", default="fast", help="model for every channel (shipped name or .safetensors)")
    parser.add_argument("--time-points", type=int, default=5)
    parser.add_argument("--show", action="store_true", help="open livedenoise's raw | denoised viewer while acquiring")
    parser.add_argument("--screenshot", type=Path, help="with --show: save the viewer here at the end")
    args = parser.parse_args(argv)
    out = args.output or Path(tempfile.mkdtemp(prefix="livedenoise-attach-"))

    core = start_simulated_core()  # on a real microscope: leave this out
    channels = ["5%", "20%"]  # the simulator's channel group sets the light power; yours names fluorophores
    positions = spread_positions(core.microscope.config, 2)
    events = multi_d_acquisition_events(num_time_points=args.time_points, channel_group=LIGHT_GROUP, channels=channels,
                                        z_start=0, z_end=2, z_step=1, xy_positions=[list(p) for p in positions])

    scores = TruthScores(core.microscope)  # your display callback here (it gets each shown raw | denoised frame)

    def acquire(display):
        # One model per channel by name; a channel mapped to None (e.g. brightfield) is left alone.
        den = PycromanagerDenoiser(args.model, channels={"20%": args.model}, output=out / "denoised", display=display)
        hook = {"image_saved_fn": den.saved} if args.saved else {"image_process_fn": den.process}
        with Acquisition(directory=str(out / "raw"), name="experiment", show_display=False, **hook) as acq:
            acq.acquire(events)
            raw = acq.get_dataset()
        return raw, den.close()

    raw, report = run_example(acquire, scores, show=args.show, title="livedenoise attached to pycromanager",
                              screenshot=args.screenshot)

    print(report.summary())
    for channel, info in report.channels.items():
        print(f"  channel {channel}: {info['model']}, {info['frames_recorded']} frames; {info['noise_model']}")
    print("\n".join(scores.lines()))
    print(f"raw: {raw.path}\ndenoised: {report.denoised_path}")
    expected = len(events)
    return 0 if report.frames_written == expected and not report.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
