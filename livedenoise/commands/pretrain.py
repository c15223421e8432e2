"""`livedenoise pretrain`: train a backbone supervised on simulated pairs or a folder of real pairs."""
from __future__ import annotations

import argparse
from pathlib import Path

from livedenoise.commands._argtypes import int_range, positive_number, positive_seconds
from livedenoise.commands._checkpoint_output import add_training_output_arguments, check_output_file
from livedenoise.config import cache_dir

HELP = """\
Pretrain a denoising backbone (supervised, MSE, lr 1e-3 as in Wang et al.).

By default (--data synthetic) the training pairs are synthetic: a bank of clean fields with eleven
structure kinds (filaments, tubes, puncta, rings, ER-like networks, membranes, cytoplasm, nuclei,
speckle, rod-shaped bacteria; straight filaments held out for testing; uneven light and debris in
some), rendered once and cached under --cache-dir, with fresh sCMOS camera noise for every batch
(0.7-3000 photons peak, gain 0.2-8 ADU/e-, read noise 0.4-6 e-, fixed pattern, 8-bit display renders).
--data simulated uses the first release's recipe.
With --pairs DIR it trains on your own low/high-SNR pairs (<name>_noisy.tif + <name>_clean.tif).
With --structures DIR, fields cut from your high-SNR images (long exposures, averages, the clean halves
of pairs) join the synthetic bank and get the same fresh camera noise: real structure, unlimited noise.

Long runs: the current weights are written to -o every --checkpoint-every seconds; continue with
--init (same file) and, for the later stages, a lower --lr:

  livedenoise pretrain --preset fast --time-budget 3600 -o fast.safetensors
  livedenoise pretrain --init fast.safetensors --lr 3e-4 --time-budget 1800 -o fast.safetensors --overwrite
  livedenoise pretrain --init fast --preset standard --lr 3e-4 -o standard.safetensors   # grow fast into standard
  livedenoise pretrain --init fast --preset temporal --lr 1e-2 -o temporal.safetensors   # fuse frames over time
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain a backbone on simulated or your own noisy/clean pairs",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["fast", "standard", "lite", "temporal"],
                   help="network size (default fast; with --init, the init's; lite: 8 channels at full resolution, "
                        "5 levels, about a third of fast's time). A preset wider than --init grows it "
                        "first, keeping what it learned: --init fast --preset standard. 'temporal' builds the temporal "
                        "backbone on a 2-D init (--init fast) and trains its fusion on synthetic time-lapses")
    p.add_argument("--pairs", type=Path,
                   help="folder of <name>_noisy.tif / <name>_clean.tif pairs instead of the simulator")
    p.add_argument("--data", choices=["synthetic", "simulated"], default="synthetic",
                   help="training data when --pairs is not given (default synthetic)")
    p.add_argument("--bank-fields", type=int_range(1, 100_000), default=600,
                   help="clean fields in the synthetic bank (default 600)")
    p.add_argument("--hold-out", nargs="*", default=["straight_filaments"],
                   help="structure kinds kept out of the synthetic bank (default straight_filaments)")
    p.add_argument("--structures", type=Path,
                   help="folder of high-SNR images (or of pairs: their clean halves) whose structure joins the "
                        "synthetic bank, with fresh camera noise per batch (livedenoise.training.realbank)")
    p.add_argument("--structure-weight", type=positive_number(upper=1.0), default=0.5,
                   help="share of batches drawn from --structures (default 0.5)")
    p.add_argument("--cache-dir", type=Path, default=cache_dir(),
                   help="where the rendered clean bank is cached "
                        "(default $XDG_CACHE_HOME/livedenoise or ~/.cache/livedenoise)")
    p.add_argument("--checkpoint-every", type=positive_seconds, default=300.0,
                   help="write the current weights to -o every this many seconds (default 300)")
    p.add_argument("--train-images", type=int, default=400, help="--data simulated: training images (default 400)")
    p.add_argument("--image-size", type=int_range(16, 4096), default=128, help="simulated image size (default 128)")
    p.add_argument("--steps", type=int_range(1), default=20000, help="maximum optimisation steps (default 20000)")
    p.add_argument("--time-budget", type=positive_seconds, default=None, help="stop after this many seconds")
    p.add_argument("--batch-size", type=int_range(1, 512), default=8)
    p.add_argument("--patch-size", type=int_range(16, 1024), default=96)
    p.add_argument("--patience", type=int_range(1), default=40, help="validations without improvement before stopping")
    p.add_argument("--steps-per-validation", type=int_range(1), default=200)
    p.add_argument("--lr", type=positive_number(upper=1.0), default=1e-3)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                   help="learning rate: constant, or cosine decay to 3%% of --lr over --steps or --time-budget, "
                        "whichever ends the run (one call instead of stages of falling --lr)")
    p.add_argument("--init", help="continue from this checkpoint's weights ('fast', 'standard' or a path)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="the training steps' arithmetic: bf16 runs each step's network under bf16 autocast (weights, "
                        "optimiser, loss and validations stay fp32; ~3x the fp32 steps on a CPU with Intel AMX); "
                        "recorded in the checkpoint's stage (default fp32)")
    add_training_output_arguments(p)
    p.set_defaults(func=run,
                   interrupted="interrupted: the last interim checkpoint (written every --checkpoint-every seconds) "
                               "stays at -o; go on with --init <that file>")


def run(args: argparse.Namespace) -> int:
    from livedenoise.errors import LivedenoiseError
    from livedenoise.progress import fit_progress
    from livedenoise.training.pretrain import pretrain

    # --init may name the output itself: continuing a run in place is the documented way to add a stage (each stage
    # is recorded in the checkpoint); the training data may not
    check_output_file(args.output, args.overwrite, [args.pairs, args.structures])
    from simulators.structures import KINDS

    unknown = sorted(set(args.hold_out) - set(KINDS))
    if unknown:
        raise LivedenoiseError(f"--hold-out {' '.join(unknown)}: unknown structure kind; "
                               f"expected some of {', '.join(KINDS)}")
    init = None
    if args.init:
        from livedenoise.modelspec import load_model_spec

        init = load_model_spec(args.init)
    structures = None
    if args.structures is not None:
        from livedenoise.training.realbank import structure_images_from

        structures = structure_images_from(args.structures)
    with fit_progress(f"pretraining '{args.preset or (init.name if init else 'fast')}'") as progress:
        res = pretrain(args.preset, pairs_dir=args.pairs, data=args.data, bank_fields=args.bank_fields,
                       held_out=tuple(args.hold_out), cache_dir=args.cache_dir,
                       checkpoint_every_s=args.checkpoint_every,
                       patience=args.patience, steps_per_validation=args.steps_per_validation,
                       n_train=args.train_images, image_size=args.image_size,
                       patch_size=args.patch_size, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                       max_steps=args.steps,
                       time_budget_s=args.time_budget, seed=args.seed, device=args.device, output=args.output,
                       progress=progress, init=init,
                       structure_images=[im for _, im in structures] if structures else None,
                       structure_names=[n for n, _ in structures] if structures else None,
                       structure_weight=args.structure_weight, precision=args.precision)
    f = res.fit
    print(f"wrote {args.output}: {f.steps} steps in {f.elapsed_s:.0f} s, validation loss {f.initial_val_loss:.4g} -> "
          f"{f.best_val_loss:.4g} (stopped: {f.stopped})")
    return 0
