"""`livedenoise evaluate`: reproduce the papers' experiments (simulator) or compare methods on real pairs."""
from __future__ import annotations

import argparse
from pathlib import Path

from livedenoise.weights import DEFAULT_BACKBONE

HELP = """\
Measure how well denoising works, with a report (Markdown tables + PNG plots + JSON/CSV).

  On the simulator, the experiments of the two papers (transfer vs from scratch vs supervised
  across photon levels, rerun stability, training-set size, L1 vs L2, few-pair fine-tuning,
  robustness to averaged inputs):
    livedenoise evaluate --quick -o runs/eval-quick        # a few minutes on a laptop CPU
    livedenoise evaluate -o runs/eval-full                 # the full grids (hours on a CPU)
    livedenoise evaluate --quick --experiments sweep,pairs -o runs/eval

  On your own low/high-SNR pairs (<set>/<name>_noisy.tif + <set>/<name>_clean.tif):
    livedenoise evaluate --pairs my_pairs/ --quick -o runs/eval-real

Open <output>/report.md to read the results.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="reproduce the papers' experiments and compare methods, with a report",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="preset",
                      help="small grids and short fits: a few minutes on a 2-core CPU")
    size.add_argument("--full", action="store_const", const="full", dest="preset",
                      help="the full grids of the papers (default; hours on a CPU, faster on a GPU)")
    size.add_argument("--preset", choices=["tiny", "quick", "full"], dest="preset", help=argparse.SUPPRESS)
    p.set_defaults(preset="full")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for report.md, results.json/csv and plots")
    p.add_argument("--pairs", type=Path,
                   help="folder of real <set>/<name>_noisy.tif + _clean.tif pairs (instead of the simulator)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"'fast', 'standard' or a checkpoint path (default {DEFAULT_BACKBONE})")
    p.add_argument("--experiments", help="comma-separated subset of: sweep, stability, size, loss, pairs, averages")
    p.add_argument("--seeds", type=int, help="reruns per setting (overrides the preset for every experiment)")
    p.add_argument("--time-budget", type=float, help="seconds per fit (overrides the preset)")
    p.add_argument("--max-steps", type=int, help="training steps per fit at most (overrides the preset)")
    p.add_argument("--scratch-time-budget", type=float,
                   help="seconds per from-scratch fit (trained until early stopping within it; overrides the preset)")
    p.add_argument("--image-size", type=int, help="simulated image side in pixels (overrides the preset)")
    p.add_argument("--affine", default="all",
                   help="real pairs: sets scored with the affine-fit metric: 'all' (default), 'none' or SET,SET,...")
    p.add_argument("--max-pairs-per-set", type=int,
                   help="real pairs: evaluate at most this many pairs per set (0 = all)")
    p.add_argument("--crop", type=int, help="real pairs: centre crop side in pixels (0 = whole image)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The :class:`~livedenoise.evaluate.EvalConfig` for the parsed arguments (preset + overrides)."""
    from dataclasses import replace

    from livedenoise.errors import ConfigError
    from livedenoise.evaluate import preset

    cfg = preset(args.preset)
    changes: dict = {}
    if args.experiments:
        changes["experiments"] = tuple(e.strip() for e in args.experiments.split(",") if e.strip())
    if args.seeds is not None:
        if args.seeds < 1:
            raise ConfigError(f"--seeds {args.seeds} is invalid; expected a positive number of reruns.")
        changes.update(dict.fromkeys(("sweep_seeds", "stability_seeds", "size_seeds", "loss_seeds", "pairs_seeds"),
                                     args.seeds))
    if args.time_budget is not None:
        if args.time_budget <= 0:
            raise ConfigError(f"--time-budget {args.time_budget} is invalid; expected a positive number of seconds.")
        changes["time_budget_s"] = args.time_budget
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ConfigError(f"--max-steps {args.max_steps} is invalid; expected a positive number of steps.")
        changes["max_steps"] = args.max_steps
    if getattr(args, "scratch_time_budget", None) is not None:
        if args.scratch_time_budget <= 0:
            raise ConfigError(f"--scratch-time-budget {args.scratch_time_budget} is invalid; expected a positive "
                              "number of seconds.")
        changes["scratch_time_budget_s"] = args.scratch_time_budget
    if args.image_size is not None:
        changes["image_size"] = args.image_size
    if args.max_pairs_per_set is not None:
        changes["real_max_pairs_per_set"] = args.max_pairs_per_set or None
    if args.crop is not None:
        changes["real_crop"] = args.crop or None
    return replace(cfg, **changes).validate()


def run(args: argparse.Namespace) -> int:
    import logging

    from rich.console import Console

    from livedenoise.device import select_device
    from livedenoise.evaluate import run_evaluation
    from livedenoise.modelspec import load_model_spec
    from livedenoise.progress import ProgressBars

    cfg = build_config(args)
    backbone = load_model_spec(args.backbone)
    select_device(args.device)  # logs the device once; the many fits below would repeat it
    lib_log = logging.getLogger("livedenoise")
    quiet = not getattr(args, "verbose", False)
    previous = lib_log.level
    if quiet:
        lib_log.setLevel(logging.WARNING)
    console = Console()
    if args.pairs is None:
        from livedenoise.evaluate import SCRATCH_METHODS, TRAINED_METHODS, Evaluator

        plan = Evaluator(cfg, backbone, device=args.device).plan()
        models = {k.model for _, k in plan if k.model.method in TRAINED_METHODS}
        scratch = sum(1 for m in models if m.method in SCRATCH_METHODS)
        fits = len(models) - scratch
        worst = fits * cfg.time_budget_s + scratch * cfg.scratch_time_budget_s
        console.print(f"{cfg.name} evaluation: {fits} fine-tunes of at most {cfg.time_budget_s:g} s and {scratch} "
                      f"from-scratch fits of at most {cfg.scratch_time_budget_s:g} s (up to {worst / 3600:.1f} h)"
                      f"{'; --quick takes minutes' if cfg.name == 'full' else ''}")
    with ProgressBars(out=console) as bars:
        task = bars.add(f"evaluate ({cfg.name})", 1)

        def progress(what: str, done: int, total: int) -> None:
            bars.update(task, completed=done, total=total, info=f"{done}/{total} {what}")

        try:
            result = run_evaluation(args.output, cfg, backbone=backbone, pairs_dir=args.pairs, affine=args.affine,
                                    device=args.device, progress=progress, plots=not args.no_plots)
        finally:
            lib_log.setLevel(previous)
    console.print(f"wrote {result.files['report']} ({len(result.rows)} scored images, {result.seconds:.0f} s); "
                  f"plots: {', '.join(p.name for k, p in result.files.items() if p.suffix == '.png') or 'none'}")
    return 0
