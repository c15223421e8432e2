"""Few-pair fine-tuning (the CNNT claim) on real dev pairs: leave one out, beside the backbone and VST+BM3D.

    python benchmarks/bench_pairs.py --model runs/train/fast-synth.safetensors
    python benchmarks/bench_pairs.py --quick          # 2 held-out fields per set, 30 s budgets

For every dev set with at least ``--pairs + 1`` pairs, and for each held-out pair ``i`` (all, or the
first two with ``--quick``): fine-tune the backbone (``livedenoise.training.finetune.finetune``, the
``finetune --pairs`` path) on ``--pairs`` *other* pairs of the same set within ``--budget`` seconds,
then denoise pair ``i``'s noisy image the way ``denoise --model adapted.safetensors`` does (noise
model fitted to that image) and score it against its clean image. The same image is denoised by the
backbone zero-shot and by VST+BM3D (cached, ``bench_backbone.cached_bm3d``). Every fine-tune's steps,
best step, stop reason and ``adapted`` flag are recorded; a fit that kept the backbone's weights is
scored as the backbone (that is what the product then uses) and counted as such.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backbone import cached_bm3d
from common import (
    DEFAULT_OUTPUT,
    DEV_AFFINE_SETS,
    REAL_PAIRS_DEV,
    finite_mean,
    machine,
    machine_line,
    publish,
    table,
)


def main(argv: list[str] | None = None) -> int:
    import logging

    from livedenoise.config import TrainingConfig
    from livedenoise.evaluate import with_normalizer
    from livedenoise.inference import Denoiser
    from livedenoise.metrics import score
    from livedenoise.modelspec import load_model_spec
    from livedenoise.training.finetune import finetune
    from livedenoise.training.pairs import load_pair_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fast", help="backbone: 'fast', 'standard' or a checkpoint")
    ap.add_argument("--pairs", type=int, default=5, help="training pairs per fine-tune (default 5)")
    ap.add_argument("--budget", type=float, default=None, help="fine-tuning seconds (default 60; 30 with --quick)")
    ap.add_argument("--lr", type=float, default=None,
                    help="fine-tuning learning rate (default: TrainingConfig.lr_pairs)")
    ap.add_argument("--patience", type=int, default=None,
                    help="validations without improvement before stopping (default: TrainingConfig.patience)")
    ap.add_argument("--adapt-layers", default=None, choices=("all", "decoder", "last", "bias"),
                    help="which weights the fine-tune changes (default: TrainingConfig.adapt_layers)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--folder", type=Path, default=REAL_PAIRS_DEV)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.ERROR)
    budget = args.budget if args.budget is not None else (30.0 if args.quick else 60.0)
    backbone = load_model_spec(args.model)
    by_set: dict[str, list] = {}
    for p in load_pair_folder(args.folder):
        by_set.setdefault(p.set, []).append(p)
    rows = []
    cfg = TrainingConfig(time_budget_s=budget, max_steps=100_000,
                         **({"lr_pairs": args.lr} if args.lr is not None else {}),
                         **({"patience": args.patience} if args.patience is not None else {}),
                         **({"adapt_layers": args.adapt_layers} if args.adapt_layers is not None else {}))
    for name, pairs in by_set.items():
        if len(pairs) < args.pairs + 1:
            continue
        held = range(2) if args.quick else range(len(pairs))
        for i in held:
            test = pairs[i]
            train = [p for j, p in enumerate(pairs) if j != i][: args.pairs]
            print(f"[pairs] {name}: held out {test.name}, fine-tuning on {len(train)} pairs", flush=True)
            t0 = time.perf_counter()
            res = finetune(backbone, [np.asarray(p.noisy) for p in train], [np.asarray(p.clean) for p in train],
                           training=cfg, device="cpu", seed=0)
            fit_s = time.perf_counter() - t0
            noisy, clean = np.asarray(test.noisy), np.asarray(test.clean).astype(np.float32)
            affine = name in DEV_AFFINE_SETS
            zero = Denoiser(with_normalizer(backbone, [noisy]), device="cpu").denoise(noisy)
            adapted_ckpt = res.checkpoint if res.adapted else backbone
            tuned = Denoiser(with_normalizer(adapted_ckpt, [noisy]), device="cpu").denoise(noisy)
            bm3d, _ = cached_bm3d([noisy])
            f = res.fit
            rows.append({"set": name, "held_out": test.name, "train": [p.name for p in train],
                         "backbone": score(clean, zero, affine=affine).psnr,
                         "fine-tuned": score(clean, tuned, affine=affine).psnr,
                         "vst+bm3d": score(clean, bm3d[0], affine=affine).psnr,
                         "ssim_backbone": score(clean, zero, affine=affine).ssim,
                         "ssim_fine-tuned": score(clean, tuned, affine=affine).ssim,
                         "steps": f.steps, "best_step": f.best_step, "stopped": f.stopped, "adapted": res.adapted,
                         "fit_seconds": fit_s})
    payload = {"machine": machine(), "backbone": backbone.name, "backbone_steps": (backbone.training or {}).get(
        "total_steps"), "pairs": args.pairs, "budget_s": budget, "lr": cfg.lr_pairs, "patience": cfg.patience,
        "adapt_layers": cfg.adapt_layers,
        "quick": args.quick, "rows": rows,
        "command": "python benchmarks/bench_pairs.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = render(rows, backbone.name, args.pairs, budget, payload["machine"])
    publish(args.output, "pairs" + ("-quick" if args.quick else ""), payload, md)
    return 0




def render(rows: list[dict], backbone: str, n_pairs: int, budget: float, machine_info: dict, *,
           heading: bool = True) -> str:
    """Markdown table per set (``readme_tables.py`` reuses it)."""
    lines = [f"# Few-pair fine-tuning, leave one out ({n_pairs} pairs, {budget:g} s per fine-tune)", "",
             f"- machine: {machine_line(machine_info)}"] if heading else []
    lines += [f"- backbone `{backbone}`, {n_pairs} pairs of the same set per fine-tune, {budget:g} s budget; "
              "PSNR dB of the held-out field; a fine-tune that kept the backbone's weights scores as the backbone", ""]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    body = []
    for s in sets:
        sel = [r for r in rows if r["set"] == s]
        body.append([s, len(sel), f"{finite_mean(r['vst+bm3d'] for r in sel):.2f}",
                     f"{finite_mean(r['backbone'] for r in sel):.2f}",
                     f"{finite_mean(r['fine-tuned'] for r in sel):.2f}",
                     f"{finite_mean(r['fine-tuned'] - r['backbone'] for r in sel):+.2f}",
                     f"{finite_mean(r['steps'] for r in sel):.0f} ({finite_mean(r['best_step'] for r in sel):.0f})",
                     f"{sum(r['adapted'] for r in sel)}/{len(sel)}"])
    if rows:
        body.append(["**all**", len(rows), f"{finite_mean(r['vst+bm3d'] for r in rows):.2f}",
                     f"{finite_mean(r['backbone'] for r in rows):.2f}",
                     f"{finite_mean(r['fine-tuned'] for r in rows):.2f}",
                     f"{finite_mean(r['fine-tuned'] - r['backbone'] for r in rows):+.2f}",
                     f"{finite_mean(r['steps'] for r in rows):.0f} ({finite_mean(r['best_step'] for r in rows):.0f})",
                     f"{sum(r['adapted'] for r in rows)}/{len(rows)}"])
    lines += [table(["set", "folds", "VST+BM3D", "backbone", "fine-tuned", "gain", "steps (best)", "adapted"], body),
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
