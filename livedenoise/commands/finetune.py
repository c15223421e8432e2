"""`livedenoise finetune`: adapt a backbone to your experiment from noisy images alone or a few pairs."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from livedenoise.commands._argtypes import positive_number, positive_seconds
from livedenoise.commands._checkpoint_output import add_training_output_arguments, check_output_file
from livedenoise.config import TrainPrecision
from livedenoise.weights import DEFAULT_BACKBONE

HELP = """\
Adapt a pretrained backbone to your data in minutes (transfer learning).

  Self-supervised (blind-spot Noise2Same training, no clean images needed; even one image works):
    livedenoise finetune --images movie.tif -o my-model.safetensors
  From a few low/high-SNR pairs (<name>_noisy.tif + <name>_clean.tif in a folder):
    livedenoise finetune --pairs calib_pairs/ -o my-model.safetensors

Use the result with `livedenoise denoise --model my-model.safetensors` or in a live session.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="adapt a backbone to your images (self-supervised or few pairs)",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, nargs="+", help="noisy TIFF images or stacks (self-supervised)")
    src.add_argument("--pairs", type=Path, help="folder of <name>_noisy.tif / <name>_clean.tif pairs")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help="'fast', 'standard', 'lite', 'temporal', 'temporal-standard' or 'temporal-lite' (its 2-D "
                        "stage is adapted) or a checkpoint path "
                        f"(default {DEFAULT_BACKBONE})")
    p.add_argument("--camera-calibration", type=Path, help="file from `livedenoise calibrate-camera` (optional)")
    p.add_argument("--time-budget", type=positive_seconds, default=60.0,
                   help="fine-tune for at most this many seconds (default 60)")
    p.add_argument("--loss", choices=["l2", "l1"], default="l2")
    p.add_argument("--adapt-layers", choices=["all", "decoder", "last", "bias"], default=None,
                   help="which weights change: all, the decoder half, the last level and head, or the biases "
                        "(default all; see the README's few-pair table)")
    p.add_argument("--lr", type=positive_number(upper=1.0), default=None,
                   help="learning rate (default 1e-4)")
    p.add_argument("--precision", choices=get_args(TrainPrecision), default="fp32",
                   help="training arithmetic: bf16 (weights, losses and validations kept in fp32) took 1.3-1.45x the "
                        "steps per second on a CPU with native bfloat16 (default fp32)")
    add_training_output_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from livedenoise.camera_calibration import CameraCalibration
    from livedenoise.commands._frames import read_frames
    from livedenoise.config import TrainingConfig
    from livedenoise.errors import LivedenoiseError
    from livedenoise.modelspec import load_model_spec
    from livedenoise.progress import fit_progress
    from livedenoise.training.finetune import finetune
    from livedenoise.training.pairs import load_pair_folder

    check_output_file(args.output, args.overwrite,
                          [*(args.images or []), args.pairs, args.camera_calibration, args.backbone])
    backbone = load_model_spec(args.backbone)
    calibration = CameraCalibration.load(args.camera_calibration) if args.camera_calibration else None
    if args.pairs is not None:
        pairs = load_pair_folder(args.pairs)
        noisy, clean = [p.noisy for p in pairs], [p.clean for p in pairs]
    else:
        noisy, clean = read_frames(args.images), None
    rate = {} if args.lr is None else {"lr_pairs": args.lr, "lr_self_supervised": args.lr}
    layers = {} if args.adapt_layers is None else {"adapt_layers": args.adapt_layers}
    cfg = TrainingConfig(loss=args.loss, seed=args.seed, precision=args.precision, **rate, **layers)
    with fit_progress("fine-tuning") as progress:
        res = finetune(backbone, noisy, clean, calibration=calibration, training=cfg, time_budget_s=args.time_budget,
                       device=args.device, progress=progress)
    f = res.fit
    if not res.adapted:  # writing it would relabel the unchanged backbone as a fine-tuned model
        hint = "" if f.stopped == "skipped" else " Give a larger --time-budget (or more images)"
        raise LivedenoiseError(f"not adapted: {f.not_adapted_reason()}; nothing was written.{hint}")
    res.checkpoint.save(args.output)
    print(f"wrote {args.output}: {res.mode} fine-tuning of {backbone.name} on {len(noisy)} image(s), "
          f"{f.steps} steps in {f.elapsed_s:.0f} s (weights of step {f.best_step} kept), "
          f"held-out loss {f.initial_val_loss:.4g} -> "
          f"{f.best_val_loss:.4g} (stopped: {f.stopped})")
    return 0
