"""`livedenoise simulate`: acquire a dataset from the simulated microscope through pycromanager.

The frames travel the same road as on a real microscope -- a Micro-Manager core, pycromanager's
``Acquisition``, NDTiff on disk -- so whatever is built on this data (batch denoising, evaluation,
the live session) is exercised for real. Because the microscope is simulated, the noise-free
expected image of every frame is known and saved beside the raw data as the ground truth.

Output folder layout::

    OUTDIR/raw/                  NDTiff dataset, camera dtype, exactly as acquired
    OUTDIR/ground_truth.ome.tif  float32 expected ADU per frame, same axes and shape as the raw array
    OUTDIR/simulate.json         axes order and values, per-frame settings, the configuration, timing
"""
from __future__ import annotations

import argparse
import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.commands._argtypes import int_range
from livedenoise.commands._session import SIGNAL_EXIT, stop_on_signals
from livedenoise.errors import ConfigError, InputDataError, LivedenoiseError

HELP = """\
Record a time series (and optionally several stage positions) from the simulated microscope,
through a real Micro-Manager core and pycromanager's Acquisition, and save:

  OUTDIR/raw/                  the raw frames as NDTiff (what Micro-Manager would save)
  OUTDIR/ground_truth.ome.tif  the noise-free image of every frame (float32, same axes)
  OUTDIR/simulate.json         axes, per-frame settings and the configuration used

No microscope or Micro-Manager installation is needed. Examples:

  livedenoise simulate -o data/sim --frames 50
  livedenoise simulate -o data/sim --frames 20 --positions 4 --exposure-ms 10 --power 2
  livedenoise simulate -o data/sim --camera generic-12bit-scmos --roi 512x512 --seed 1

Read the result with `livedenoise.io.ndtiff.read_ndtiff("data/sim/raw")` and
`tifffile.imread("data/sim/ground_truth.ome.tif")`.
"""

RAW_NAME = "raw"
TRUTH_NAME = "ground_truth.ome.tif"
SIDECAR_NAME = "simulate.json"
#: NDTiff axis -> OME-TIFF dimension letter; other axes take the free "modulo" letters in turn.
_OME_LETTERS = {"time": "T", "channel": "C", "z": "Z", "position": "R"}
_OME_SPARE = "QAPHE"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="record a simulated dataset (NDTiff raw + ground truth) through pycromanager",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--config", type=Path, default=None,
                   help="microscope TOML (default: config/microscope.toml)")
    p.add_argument("--frames", type=int, default=10, help="time points to record (default 10)")
    p.add_argument("--positions", type=int, default=1,
                   help="stage positions, spread evenly over the virtual slide (default 1)")
    p.add_argument("--exposure-ms", type=float, default=None, help="camera exposure in ms (default from config)")
    p.add_argument("--power", type=float, default=None, help="light power in percent, 0-100 (default from config)")
    p.add_argument("--roi", default=None, help="field of view WIDTHxHEIGHT in pixels, e.g. 256x256")
    p.add_argument("--camera", default=None, help="camera preset name (see config/cameras/*.toml)")
    p.add_argument("--seed", type=int_range(0), default=None,
                   help="seed of the camera noise, an integer >= 0 (same seed, same frames)")
    p.add_argument("--interval-ms", type=float, default=0.0,
                   help="time between time points in ms (default 0: as fast as possible)")
    p.add_argument("--realtime", action="store_true",
                   help="make each frame take its exposure time, like a real camera")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUTDIR")
    p.set_defaults(func=run)


# -- configuration -------------------------------------------------------------------------------
def parse_roi(text: str) -> tuple[int, int]:
    """``"256x128"`` -> ``(256, 128)`` (width, height)."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--roi {text!r}: expected WIDTHxHEIGHT with positive integers, e.g. 256x256")
    return int(parts[0]), int(parts[1])


def load_config(args: argparse.Namespace) -> Any:
    """The microscope configuration from ``--config`` plus command-line overrides (one clear error)."""
    from simulators.config import SimulatorConfigError, load_microscope_config

    overrides: dict[str, Any] = {
        "exposure_ms": args.exposure_ms,
        "light_power": args.power,
        "camera": args.camera,
        "seed": args.seed,
    }
    if args.roi is not None:
        overrides["roi_width"], overrides["roi_height"] = parse_roi(args.roi)
    try:
        return load_microscope_config(args.config, **overrides)
    except SimulatorConfigError as exc:
        raise ConfigError(str(exc)) from None


def check_output(outdir: Path, overwrite: bool) -> None:
    """Refuse to mix with or silently replace an earlier dataset; with ``overwrite`` remove our own files."""
    raw, truth, sidecar = outdir / RAW_NAME, outdir / TRUTH_NAME, outdir / SIDECAR_NAME
    existing = [p for p in (raw, truth, sidecar) if p.exists()]
    if outdir.exists() and not outdir.is_dir():
        raise InputDataError(f"{outdir}: exists and is not a folder; choose another -o")
    if not existing:
        return
    if not overwrite:
        raise LivedenoiseError(
            f"{outdir} already holds a simulated dataset ({existing[0].name}); pass --overwrite to replace it "
            "or choose another -o folder"
        )
    if raw.exists() and not (raw / "NDTiff.index").exists():
        raise InputDataError(f"{raw}: exists but is not an NDTiff dataset; not deleting it, choose another -o")
    if raw.exists():
        shutil.rmtree(raw)
    for p in (truth, sidecar):
        if p.exists():
            p.unlink()


# -- acquisition -------------------------------------------------------------------------------------
@dataclass
class SimulatedDataset:
    """Where ``simulate`` wrote its data and how fast it acquired."""

    raw: Path
    ground_truth: Path
    sidecar: Path
    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def _axes_key(axes: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(axes.items()))


def ome_axes(axes: tuple[str, ...]) -> str:
    """OME-TIFF dimension letters for NDTiff axes ending in (y, x)."""
    spare = iter(_OME_SPARE)
    letters = [_OME_LETTERS.get(a) or next(spare) for a in axes[:-2]]
    return "".join(letters) + "YX"


def simulate_dataset(
    config: Any,
    outdir: Path,
    *,
    frames: int,
    positions: int = 1,
    interval_ms: float = 0.0,
    realtime: bool = False,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> SimulatedDataset:
    """Acquire ``frames`` x ``positions`` images with pycromanager on a simulated core; write raw + truth.

    ``progress(done, total)`` is called after every saved frame. ``outdir`` must not hold a dataset.
    """
    import tifffile

    from livedenoise.io.ndtiff import read_ndtiff
    from simulators.core import acquire_with_pycromanager, build_events, spread_positions, start_simulated_core

    outdir.mkdir(parents=True, exist_ok=True)
    core = start_simulated_core(config, realtime=realtime)
    try:
        stage = spread_positions(config, positions) if positions > 1 else None
        events = build_events(core, frames=frames, positions=stage,
                              interval_s=interval_ms / 1000.0 if interval_ms > 0 else None)
        truths: dict[tuple, tuple[np.ndarray, dict[str, Any]]] = {}
        lock = threading.Lock()
        missing: list[dict[str, Any]] = []

        def record_truth(image: np.ndarray, metadata: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
            frame = core.microscope.lookup(image)
            with lock:
                if frame is None:
                    missing.append(metadata.get("Axes", {}))
                else:
                    truths[_axes_key(metadata["Axes"])] = (frame.truth, frame.metadata)
            return image, metadata

        saved = 0

        def on_saved(axes: Any, dataset: Any) -> None:
            nonlocal saved
            saved += 1
            if progress is not None:
                progress(saved, len(events))

        result = acquire_with_pycromanager(core, events, directory=outdir, name=RAW_NAME,
                                           image_process_fn=record_truth, image_saved_fn=on_saved, stop=stop)
    finally:
        core.close()
    if missing:
        raise LivedenoiseError(f"{len(missing)} frames could not be matched to the simulator's ground truth")
    if result.dataset_path is None:  # pragma: no cover - pycromanager always reports the folder
        raise LivedenoiseError(f"pycromanager did not report where it saved the data under {outdir}")
    raw_dir = outdir / RAW_NAME
    Path(result.dataset_path).rename(raw_dir)

    raw = read_ndtiff(raw_dir)
    truth = np.zeros(raw.data.shape, np.float32)
    per_frame = []
    for key, (image_truth, meta) in truths.items():
        coords = dict(key)
        truth[raw.index_of(coords)] = image_truth
        per_frame.append({"axes": coords, **meta})
    per_frame.sort(key=lambda f: f["frame_index"])

    truth_path = outdir / TRUTH_NAME
    letters = ome_axes(raw.axes)
    px = float(config.pixel_size_um)
    ome_meta = {"axes": letters, "PhysicalSizeX": px, "PhysicalSizeY": px, "Name": "ground truth (expected ADU)"}
    try:
        tifffile.imwrite(truth_path, truth, ome=True, metadata=ome_meta)
    except Exception:  # OME allows only a few extra dimensions: flatten them, the sidecar keeps the shape
        letters = "QYX"
        tifffile.imwrite(truth_path, truth.reshape(-1, *truth.shape[-2:]), ome=True,
                         metadata={**ome_meta, "axes": letters})

    sidecar = outdir / SIDECAR_NAME
    sidecar.write_text(json.dumps({
        "raw": RAW_NAME,
        "ground_truth": TRUTH_NAME,
        "axes": list(raw.axes),
        "shape": list(raw.data.shape),
        "coords": raw.coords,
        "ome_axes": letters,
        "ground_truth_units": "expected camera output in ADU (noise-free), float32",
        "raw_dtype": str(raw.data.dtype),
        "frames": result.frames,
        "seconds": result.seconds,
        "fps": result.fps,
        "positions_um": spread_positions(config, positions) if positions > 1 else None,
        "interval_ms": interval_ms,
        "per_frame": per_frame,
        "config": config.model_dump(mode="json"),
    }, indent=2, default=_json_default))
    return SimulatedDataset(raw_dir, truth_path, sidecar, result.frames, result.seconds)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- command ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from livedenoise.progress import counting

    if args.frames < 1:
        raise ConfigError(f"--frames {args.frames}: need at least 1 time point")
    if args.positions < 1:
        raise ConfigError(f"--positions {args.positions}: need at least 1 stage position")
    if args.interval_ms < 0:
        raise ConfigError(f"--interval-ms {args.interval_ms}: must be >= 0")
    config = load_config(args)
    outdir: Path = args.output
    check_output(outdir, args.overwrite)
    from livedenoise.diskspace import ensure_room

    # raw uint16 frames + float32 ground truth per frame
    ensure_room(outdir, args.frames * args.positions * config.roi_width * config.roi_height * (2 + 4),
                "The simulated dataset and its ground truth")

    console = Console()
    total = args.frames * args.positions
    with counting("acquiring", total, transient=True, unit="frames") as update:
        stop = threading.Event()
        with stop_on_signals(stop.set) as signalled:  # Ctrl-C: the acquisition stops, the frames so far are kept
            result = simulate_dataset(config, outdir, frames=args.frames, positions=args.positions,
                                      interval_ms=args.interval_ms, realtime=args.realtime,
                                      progress=update, stop=stop)
    camera = config.camera.name if hasattr(config.camera, "name") else config.camera
    lines = [
        f"[bold]simulated[/] {result.frames} frames ({args.frames} time points x {args.positions} position(s)), "
        f"{config.roi_width}x{config.roi_height} px, camera {camera}",
        f"  acquired in {result.seconds:.2f} s = {result.fps:.1f} fps (pycromanager on the simulated core)",
        f"  raw NDTiff:    {result.raw}",
        f"  ground truth:  {result.ground_truth}",
        f"  description:   {result.sidecar}",
    ]
    for line in lines:
        console.print(line, soft_wrap=True)
    if signalled["signal"] is not None:
        console.print(f"interrupted: {result.frames} of {total} frames were acquired; raw data and ground truth of "
                      "those are complete and readable")
        return SIGNAL_EXIT[signalled["signal"]]
    return 0
