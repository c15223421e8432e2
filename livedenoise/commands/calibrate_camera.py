"""`livedenoise calibrate-camera`: dark + flat TIFF stacks -> a camera calibration file."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.camera_calibration import calibrate
from livedenoise.commands._argtypes import int_range
from livedenoise.commands._checkpoint_output import check_output_file
from livedenoise.errors import InputDataError, LivedenoiseError

HELP = """\
Measure your camera's per-pixel offset, read noise and gain (Huang et al. 2013).

Record, at the exposure you image with:
  * a DARK stack: 200+ frames with the light path closed;
  * FLAT stacks: 100+ frames each of a uniform, unstructured target (e.g. a fluorescent slide out of
    focus or the lamp on a blank) at 3-8 brightness levels, none saturated.
Save each as a multi-page TIFF and run:

  livedenoise calibrate-camera --dark dark.tif --flat flat1.tif flat2.tif flat3.tif -o camera.safetensors

Without hardware, `--simulate` records those stacks from a simulated camera preset instead.
The file lets the denoiser work in photoelectrons (pass it to `livedenoise finetune --camera-calibration`).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("calibrate-camera",
                              help="measure camera offset / read noise / gain from dark and flat frames",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dark", type=Path, help="multi-page TIFF of dark frames")
    p.add_argument("--flat", type=Path, nargs="+", default=[], help="one multi-page TIFF per illumination level")
    p.add_argument("-o", "--output", type=Path, required=True, help="calibration file to write (.safetensors)")
    p.add_argument("--simulate", action="store_true",
                   help="record dark/flat stacks from a simulated camera instead of files")
    p.add_argument("--camera", default="andor-zyla-4.2", help="camera preset for --simulate (see config/cameras)")
    p.add_argument("--roi", default="256x256",
                   help="WxH region for --simulate (default 256x256, the simulated microscope's and the demo's)")
    p.add_argument("--frames", type=int_range(2, 10_000), default=200,
                   help="frames per stack for --simulate (default 200)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def read_stack(path: Path) -> np.ndarray:
    """A (N, Y, X) stack from a TIFF, with one clear error for missing, corrupt or wrongly shaped files."""
    from livedenoise.io import read_tiff

    arr = read_tiff(path, grey=True)
    if arr.ndim == 2:
        raise InputDataError(f"{path}: holds a single frame; a stack of many frames (N, Y, X) is needed to "
                             "measure noise")
    if arr.ndim != 3:
        raise InputDataError(f"{path}: expected a stack of 2-D frames (N, Y, X), got shape {arr.shape}")
    return arr


def simulated_stacks(preset: str, roi: str, frames: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Dark and flat stacks recorded from a simulated camera (what a user would record on the microscope)."""
    from simulators.camera import SCMOSCamera
    from simulators.config import SimulatorConfigError, load_camera_preset

    try:
        w, h = (int(v) for v in roi.lower().split("x"))
        cam = SCMOSCamera(load_camera_preset(preset), roi=(h, w))
    except SimulatorConfigError as exc:
        raise LivedenoiseError(str(exc)) from None
    except ValueError:
        raise LivedenoiseError(f"--roi {roi!r}: expected WIDTHxHEIGHT within the sensor, e.g. 128x128") from None
    rng = np.random.default_rng(0)
    t = 0.02
    dark = np.stack([cam.dark_frame(t, rng) for _ in range(frames)])
    full = cam.config.full_well / cam.config.quantum_efficiency
    flats = [np.stack([cam.expose(np.full(cam.shape, f * full, np.float32), t, rng) for _ in range(frames)])
             for f in (0.01, 0.03, 0.08, 0.2)]
    return dark, flats


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    # an input named as -o, a folder, another suffix, an existing file without --overwrite, an unwritable folder:
    # refused now, not after the work
    check_output_file(args.output, args.overwrite, [args.dark, *args.flat], what="camera calibration")
    if args.simulate:
        with console.status("recording dark and flat stacks from the simulated camera"):
            dark, flats = simulated_stacks(args.camera, args.roi, args.frames)
        info: dict[str, Any] = {"source": f"simulated camera preset {args.camera}"}
    else:
        if args.dark is None or not args.flat:
            raise LivedenoiseError("give --dark DARK.tif and --flat FLAT1.tif [FLAT2.tif ...] (or --simulate)")
        dark = read_stack(args.dark)
        flats = [read_stack(p) for p in args.flat]
        info = {"dark": str(args.dark), "flats": [str(p) for p in args.flat]}
    with console.status("estimating per-pixel offset, read noise and gain"):
        cal = calibrate(dark, flats, info=info)
    cal.save(args.output)
    s = cal.summary()
    print(f"wrote {args.output}: {cal.shape[1]}x{cal.shape[0]} px, offset {s['offset']:.1f} ADU, "
          f"gain {s['gain']:.3f} ADU/e-, read noise {s['read_noise_e']:.2f} e- rms (medians)")
    return 0
