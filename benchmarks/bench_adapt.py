"""Single-image self-supervised adaptation (``--adapt self``): each objective beside the backbone and VST+BM3D.

    python benchmarks/bench_adapt.py          # 1 pair per set, 512² crops, 60 s, every objective
    python benchmarks/bench_adapt.py --objective sure --lr 3e-5 --budget 30 --per-set 2

What this answers (issue "Quality, part 2": ``--adapt self`` within 60 s per 512² image on a 2-core CPU,
≥ +0.5 dB over the backbone, never below it): for every dev pair taken (``--per-set`` per set, centre
crop ``--crop``), the backbone is fine-tuned on that one noisy image the way ``denoise --adapt self``
does (:func:`livedenoise.training.finetune.finetune`, noise model fitted to the image), once per
``--objective`` x ``--lr``, and the image is denoised by

* the backbone zero-shot (``denoise`` without ``--adapt``);
* the fine-tuned weights whatever the criterion said (``adapted*``: what adaptation can reach);
* what the product would use (``chosen``: the fine-tuned weights only when the fit's held-out criterion
  improved *and* the full-image SURE check confirmed it, else the backbone; frames with spatially
  correlated noise are not fine-tuned at all); this is the number that must never fall below the backbone.

Every row records steps, the best step and the criterion's values. VST+BM3D (cached, same noise
estimate) is scored on the same crops. Writes ``adapt.json``/``adapt.md`` into ``--output``.
"""
from __future__ import annotations

import argparse
import itertools
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

OBJECTIVES = ("noise2same", "sure")
#: What decides whether a fine-tune is used (recorded with every run; runs before 2026-12-03 08:30 UTC had only
#: the first of these).
CRITERION = "blind-spot loss + SURE full-image check + correlated-noise skip"
EXCLUDED_FROM_MEAN = ("nucleus_migration",)


def main(argv: list[str] | None = None) -> int:
    import logging

    from livedenoise.config import TrainingConfig
    from livedenoise.evaluate import with_normalizer
    from livedenoise.evaluate.real_pairs import centre_crop
    from livedenoise.inference import Denoiser
    from livedenoise.metrics import score
    from livedenoise.modelspec import load_model_spec
    from livedenoise.training.finetune import finetune
    from livedenoise.training.pairs import load_pair_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fast", help="backbone: 'fast', 'standard' or a checkpoint")
    ap.add_argument("--objective", action="append", choices=["noise2same", "noise2self", "sure"],
                    help="self-supervised objectives to compare (repeatable; default noise2same and sure)")
    ap.add_argument("--lr", type=float, action="append", help="learning rates (repeatable; default the config's)")
    ap.add_argument("--adapt-layers", action="append", choices=["all", "decoder", "last", "bias"],
                    help="which weights change (repeatable; default the config's)")
    ap.add_argument("--budget", type=float, default=60.0, help="fine-tuning seconds per image (default 60)")
    ap.add_argument("--per-set", type=int, default=1, help="pairs per set (default 1)")
    ap.add_argument("--crop", type=int, default=512, help="centre crop side (default 512; 0 = whole images)")
    ap.add_argument("--sets", help="only these sets (comma-separated)")
    ap.add_argument("--folder", type=Path, default=REAL_PAIRS_DEV)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.ERROR)
    objectives = args.objective or list(OBJECTIVES)
    lrs = args.lr or [TrainingConfig().lr_self_supervised]
    layer_choices = args.adapt_layers or [TrainingConfig().adapt_layers]
    backbone = load_model_spec(args.model)
    only = set(args.sets.split(",")) if args.sets else None
    seen: dict[str, int] = {}
    rows = []
    for p in load_pair_folder(args.folder):
        if (only and p.set not in only) or seen.get(p.set, 0) >= args.per_set:
            continue
        seen[p.set] = seen.get(p.set, 0) + 1
        crop = args.crop or None
        noisy = centre_crop(np.asarray(p.noisy), crop)
        clean = centre_crop(np.asarray(p.clean), crop).astype(np.float32)
        affine = p.set in DEV_AFFINE_SETS
        zero = Denoiser(with_normalizer(backbone, [noisy]), device="cpu").denoise(noisy)
        bm3d, _ = cached_bm3d([noisy])
        base = {"set": p.set, "case": p.name, "shape": list(noisy.shape),
                "noisy": score(clean, noisy, affine=affine).psnr, "backbone": score(clean, zero, affine=affine).psnr,
                "vst+bm3d": score(clean, bm3d[0], affine=affine).psnr}
        for objective, lr, layers in itertools.product(objectives, lrs, layer_choices):
            cfg = TrainingConfig(self_supervised=objective, lr_self_supervised=lr, time_budget_s=args.budget,
                                 max_steps=100_000, adapt_layers=layers)
            t0 = time.perf_counter()
            res = finetune(backbone, [noisy], training=cfg, device="cpu", seed=0)
            fit_s = time.perf_counter() - t0
            tuned = Denoiser(res.checkpoint, device="cpu").denoise(noisy)
            f = res.fit
            if f.steps and not res.adapted:
                # What adaptation reached, whatever the criterion said: the last weights are gone, so
                # refit without the criterion's veto is not possible; the chosen model is the backbone.
                reached = None
            else:
                reached = score(clean, tuned, affine=affine).psnr
            chosen = score(clean, tuned if res.adapted else zero, affine=affine).psnr
            meta = res.checkpoint.metadata.get("training", {})
            row = {**base, "objective": objective, "lr": lr, "adapt_layers": layers, "adapted": res.adapted,
                   "best_weights": reached, "chosen": chosen, "steps": f.steps, "best_step": f.best_step,
                   "stopped": f.stopped,
                   "initial_val": f.initial_val_loss, "best_val": f.best_val_loss, "fit_seconds": fit_s,
                   "rejected": f.rejected, "note": f.note, "sure_check": meta.get("sure_check")}
            rows.append(row)
            print(f"[adapt] {p.set}/{p.name} {objective} lr {lr:g} {layers}: backbone {row['backbone']:.2f} "
                  f"chosen {chosen:.2f} ({f.steps} steps, best {f.best_step}, adapted {res.adapted}) "
                  f"bm3d {row['vst+bm3d']:.2f}", flush=True)
    payload = {"machine": machine(), "backbone": backbone.name, "criterion": CRITERION,
               "backbone_steps": (backbone.training or {}).get("total_steps"), "budget_s": args.budget,
               "crop": args.crop, "rows": rows,
               "command": "python benchmarks/bench_adapt.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    publish(args.output, "adapt", payload, render(payload))
    return 0


def render(payload: dict, *, heading: bool = True) -> str:
    """Per set and variant: backbone, chosen, gain, steps; mean over sets (``nucleus_migration`` excluded)."""
    rows = payload["rows"]
    lines = [f"# `--adapt self` on one image, {payload['budget_s']:g} s per fine-tune", "",
             f"- machine: {machine_line(payload['machine'])}"] if heading else []
    lines += [f"- backbone `{payload['backbone']}` ({payload['backbone_steps']} steps); centre crops of "
              f"{payload['crop'] or 'whole'} px; PSNR dB against the clean image; *chosen*: the fine-tuned weights "
              "when the fit's held-out criterion improved, else the backbone (what `denoise --adapt self` uses)", ""]
    variants = list(dict.fromkeys((r["objective"], r["lr"], layers_of(r)) for r in rows))
    body = []
    for objective, lr, layers in variants:
        sel = [r for r in rows if (r["objective"], r["lr"], layers_of(r)) == (objective, lr, layers)]
        label = objective if layers == "all" else f"{objective} ({layers})"
        for s in dict.fromkeys(r["set"] for r in sel):
            ss = [r for r in sel if r["set"] == s]
            body.append(_line(f"{s}", label, lr, ss))
        mean_rows = [r for r in sel if r["set"] not in EXCLUDED_FROM_MEAN]
        body.append(_line("**mean**", label, lr, mean_rows))
    header = ["set", "objective (weights changed)", "lr", "VST+BM3D", "backbone", "chosen", "gain", "steps (best)",
              "adapted"]
    lines += [table(header, body), ""]
    return "\n".join(lines)


def layers_of(row: dict) -> str:
    """Which weights the row's fine-tune changed (runs before ``adapt_layers`` existed changed all)."""
    return str(row.get("adapt_layers", "all"))


def _line(label: str, objective: str, lr: float, rows: list[dict]) -> list:
    return [label, objective, f"{lr:g}", f"{finite_mean(r['vst+bm3d'] for r in rows):.2f}",
            f"{finite_mean(r['backbone'] for r in rows):.2f}", f"{finite_mean(r['chosen'] for r in rows):.2f}",
            f"{finite_mean(r['chosen'] - r['backbone'] for r in rows):+.2f}",
            f"{finite_mean(r['steps'] for r in rows):.0f} ({finite_mean(r['best_step'] for r in rows):.0f})",
            f"{sum(r['adapted'] for r in rows)}/{len(rows)}"]


if __name__ == "__main__":
    raise SystemExit(main())
