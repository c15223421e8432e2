"""`livedenoise denoise`: denoise saved TIFF / OME-TIFF / NDTiff / OME-Zarr / ND2 / CZI / LIF datasets, resumable."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, cast

from livedenoise.commands._argtypes import int_range, positive_seconds
from livedenoise.config import PRECISIONS

if TYPE_CHECKING:
    from livedenoise.batch.summary import BatchSummary

HELP = """\
Denoise datasets you already saved, chunk by chunk (any size, bounded memory), into OUTDIR.

Inputs: TIFF or OME-TIFF files (stacks with any axes: the file's metadata says which, or give
--axes, e.g. TZCYX), folders of them (each file is processed, names kept), NDTiff datasets
saved by pycromanager / Micro-Manager (positions, channels, time and z are kept), OME-Zarr images,
and Nikon ND2, Zeiss CZI and Leica LIF files (with the [formats] extra: pip install 'livedenoise[formats]').

  livedenoise denoise cells.ome.tif -o denoised/                       # the default shipped backbone ('fast')
  livedenoise denoise timelapse.ome.tif -o denoised/                   # T axis: the 'temporal' backbone
  livedenoise denoise timelapse.ome.tif -o denoised/ --model fast      # time-lapse, frame by frame
  livedenoise denoise acq_1/ -o denoised/ --model fast --dtype input   # NDTiff, keep uint16
  livedenoise denoise movie.tif --axes TZCYX -o out/ --model my.safetensors
  livedenoise denoise data/ -o out/ --adapt self                       # fine-tune on the data first
  livedenoise denoise data/ -o out/ --adapt self --per-channel         # one model per channel
  livedenoise denoise data/ -o out/ --adapt pairs calib_pairs/         # fine-tune on low/high pairs
  livedenoise denoise big.ome.tif -o out/ --memory-budget 512MB --resume   # continue after a stop
  livedenoise denoise big.ome.tif -o out/ --scheduler tcp://head:8786      # on a dask cluster

The noise model is fitted to every input and channel (from temporal differences when there is a
time axis, else from the images; or from --camera-calibration), and the result is checked against it
before anything is written: a failed check is a warning (an error with --strict). The output has
the input's axes, shape and metadata, plus provenance (model, checkpoint sha256, the fitted noise
model and normalizer, the residual check, livedenoise version, date). Inputs are never modified. An
existing output is refused unless --resume (continue an interrupted run, verified against the input
and model) or --overwrite. --dry-run shows the plan without writing anything.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("denoise",
                              help="denoise saved datasets (TIFF, OME-TIFF, NDTiff, OME-Zarr, ND2, CZI, LIF), "
                                   "any size, resumable",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="TIFF / OME-TIFF / ND2 / CZI / LIF files, folders of them, NDTiff or OME-Zarr folders")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="folder for the denoised copies")
    p.add_argument("--model", action="append", metavar="MODEL",
                   help="'fast' (the default for single frames: it measures best), 'temporal' (the default for "
                        "time-lapses: uses the neighbouring frames), 'standard', 'temporal-standard' (time-lapses: "
                        "+0.3 dB for about 3x the time), 'lite' (less than half the time of 'fast', less quality), "
                        "'temporal-lite' (time-lapses: the lite network fused), or a checkpoint .safetensors; repeat "
                        "once per channel for per-channel models; with --adapt, the model to start from")
    p.add_argument("--adapt", nargs="+", metavar="MODE",
                   help="fine-tune first: 'self' (self-supervised on a sample of the data) or 'pairs DIR' "
                        "(<name>_noisy.tif + <name>_clean.tif); the adapted model is saved into OUTDIR")
    p.add_argument("--per-channel", action="store_true", help="with --adapt self: adapt one model per channel")
    p.add_argument("--adapt-time", type=positive_seconds, default=60.0, metavar="SECONDS",
                   help="time budget of each fine-tune (default 60)")
    p.add_argument("--adapt-frames", type=int_range(1, 10_000), default=8, metavar="N",
                   help="frames sampled for --adapt self (default 8)")
    p.add_argument("--axes",
                   help="axis letters of TIFF inputs, e.g. TZCYX (P position, T time, C channel, Z focus, Y, X)")
    p.add_argument("--dtype", choices=["float32", "input", "uint16", "uint8"], default="float32",
                   help="output pixel type: float32 (default, exact) or input (= the input's type, rounded and "
                        "clipped; the number of clipped pixels is reported)")
    p.add_argument("--format", choices=["ome-tiff", "ome-zarr", "ndtiff"], default="ome-tiff",
                   help="output format (default ome-tiff; ome-zarr: OME-NGFF 0.5, for napari, Fiji and cloud storage; "
                        "ndtiff needs --dtype input/uint16/uint8)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into the same OUTDIR")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--memory-budget", default="1GB", metavar="SIZE",
                   help="memory for blocks and the network, e.g. 512MB or 4GB "
                        "(default 1GB; per worker with --scheduler)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask.distributed cluster (tcp://host:8786)")
    p.add_argument("--workers", type=int_range(1, 256), default=None, metavar="N", help="local threads (default 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--seed", type=int_range(0), default=0, help="seed for --adapt, an integer >= 0 (default 0)")
    p.add_argument("--camera-calibration", "--calibration", dest="camera_calibration", metavar="FILE",
                   help="camera calibration (.safetensors from `livedenoise calibrate-camera`) for the noise model; "
                        "without it the noise is estimated from each input and channel")
    p.add_argument("--ensemble", type=int, choices=[1, 2, 4, 8], default=1, metavar="N",
                   help="average the network over N flips/rotations of each frame (1, 2, 4, 8; default 1): "
                        "better quality (+0.07-0.08 dB at 8 on the dev pairs, measured) at about N times the compute")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="network arithmetic: auto (default: fp16 on CUDA, fp32 elsewhere), fp32, bf16 (on a CPU with "
                        "native bfloat16: the network 1.8-2x faster, a whole job 1.4-1.6x, at a small measured quality "
                        "cost; see the README) or fp16")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile: seconds of compilation per tile shape, then faster "
                        "passes where much of the time is not convolutions (bf16 on a CPU with Intel AMX: measured "
                        "in the README); the same outputs in fp32, within 1e-2 of the range in bf16; needs a C++ "
                        "compiler, else it runs uncompiled with a warning")
    p.add_argument("--no-second-pass", dest="second_pass", action="store_false",
                   help="time-lapses with the temporal backbone: fuse the frames' 2-D results only, without denoising "
                        "their motion-compensated average once more (half the compute, lower quality; see the README)")
    p.add_argument("--frames-averaged", type=int_range(1, 1_000_000), default=1, metavar="N",
                   help="each input frame is the mean of N acquisitions (matters with --camera-calibration; default 1)")
    p.add_argument("--noise-model", choices=["fit", "stored"], default="fit",
                   help="fit (default): fit the noise model to each input and channel; stored: use the model's own "
                        "normaliser unchanged (only for a model trained on this very camera and light level)")
    p.add_argument("--strict", action="store_true",
                   help="refuse to write an output whose sample frame fails the residual check (default: warn)")
    p.add_argument("--dry-run", action="store_true", help="list what would be done and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run,
                   interrupted="interrupted: the finished blocks are kept; run the same command with --resume to go on")


def parse_adapt(values: list[str] | None, inputs: list[str]) -> tuple[str | None, str | None, list[str]]:
    """``--adapt self`` / ``--adapt pairs DIR``; values after those belong to INPUT (argparse greediness)."""
    from livedenoise.errors import ConfigError

    if not values:
        return None, None, inputs
    mode, rest = values[0], values[1:]
    if mode == "self":
        return "self", None, rest + inputs
    if mode == "pairs":
        if not rest:
            raise ConfigError("--adapt pairs needs the folder of pairs: --adapt pairs DIR.")
        return "pairs", rest[0], rest[1:] + inputs
    raise ConfigError(f"--adapt {mode!r} is unknown; expected 'self' or 'pairs DIR'.")


def run(args: argparse.Namespace) -> int:
    from livedenoise.batch import denoise_dataset
    from livedenoise.errors import BatchIncomplete, ConfigError

    adapt, pairs, inputs = parse_adapt(args.adapt, list(args.inputs))
    if not inputs:
        raise ConfigError("No INPUT given; expected TIFF / OME-TIFF / ND2 / CZI / LIF files, folders of them, "
                          "NDTiff or OME-Zarr datasets.")
    models = args.model or [None]  # None: the shipped model for the data (temporal for time-lapses, else fast)
    if len(models) > 1 and adapt is not None:
        raise ConfigError("--adapt starts from one model; give a single --model.")
    model = models[0] if len(models) == 1 else models
    try:
        summary = denoise_dataset(
            inputs, args.output, model=model, adapt=adapt, pairs=pairs, axes=args.axes, dtype=args.dtype,
            fmt=args.format, resume=args.resume, overwrite=args.overwrite, memory_budget=args.memory_budget,
            scheduler=args.scheduler,
            dry_run=args.dry_run, progress=not args.no_progress, per_channel=args.per_channel,
            adapt_time_s=args.adapt_time, adapt_frames=args.adapt_frames, device=args.device, workers=args.workers,
            seed=args.seed, camera_calibration=args.camera_calibration, frames_averaged=args.frames_averaged,
            strict=args.strict,
            ensemble=args.ensemble, precision=args.precision, second_pass=args.second_pass, compiled=args.compile,
            noise_model=args.noise_model,
        )
    except BatchIncomplete as exc:
        # what was written, before the one-line error naming the failures
        print(cast("BatchSummary", exc.summary).report())
        raise
    print(summary.report())
    return 0
