"""`livedenoise pretrain`: train a backbone supervised on simulated pairs or a folder of real pairs."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Pretrain a denoising backbone (supervised, MSE, lr 1e-3 as in Wang et al.).

By default the training pairs come from the built-in simulator (filaments, puncta, mitochondria,
nuclei; peak signals 2-1000 photons; three sCMOS camera presets). With --pairs DIR it trains on your own
low/high-SNR pairs (<name>_noisy.tif + <name>_clean.tif). The shipped backbones were made with:

  livedenoise pretrain --preset fast --train-images 600 --time-budget 1200 -o backbone-fast.safetensors
  livedenoise pretrain --preset fast --init backbone-fast.safetensors --time-budget 1200 -o backbone-fast-2.safetensors
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain a backbone on simulated or your own noisy/clean pairs",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="fast", choices=["fast", "standard"], help="network size (default fast)")
    p.add_argument("--pairs", type=Path, help="folder of <name>_noisy.tif / <name>_clean.tif pairs instead of the simulator")
    p.add_argument("--train-images", type=int, default=400, help="simulated training images (default 400)")
    p.add_argument("--image-size", type=int, default=128, help="simulated image size (default 128)")
    p.add_argument("--steps", type=int, default=20000, help="maximum optimisation steps (default 20000)")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--init", help="continue from this checkpoint's weights ('fast', 'standard' or a path)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from livedenoise.commands._progress import fit_progress
    from livedenoise.errors import LivedenoiseError
    from livedenoise.training.pretrain import pretrain

    if args.output.exists() and not args.overwrite:
        raise LivedenoiseError(f"{args.output}: already exists; choose another name or pass --overwrite")
    init = None
    if args.init:
        from livedenoise.modelspec import load_model_spec

        init = load_model_spec(args.init)
    with fit_progress(f"pretraining '{args.preset}'") as progress:
        res = pretrain(args.preset, pairs_dir=args.pairs, n_train=args.train_images, image_size=args.image_size,
                       patch_size=args.patch_size, batch_size=args.batch_size, lr=args.lr, max_steps=args.steps,
                       time_budget_s=args.time_budget, seed=args.seed, device=args.device, output=args.output,
                       progress=progress, init=init)
    f = res.fit
    print(f"wrote {args.output}: {f.steps} steps in {f.elapsed_s:.0f} s, validation loss {f.initial_val_loss:.4g} -> "
          f"{f.best_val_loss:.4g} (stopped: {f.stopped})")
    return 0
