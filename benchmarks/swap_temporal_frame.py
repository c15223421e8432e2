"""Put a new 2-D backbone into a temporal backbone's 2-D stage, keeping its fusion: how the shipped
``backbone-temporal`` got the fast backbone's GPU stage (2026-12-04), and how ``backbone-temporal-standard`` was
made from the standard backbone and ``backbone-temporal-lite`` from the lite one (2026-12-05; a 2-D backbone of
other widths or depth gets a temporal network of its widths).

    python benchmarks/swap_temporal_frame.py OLD_TEMPORAL.safetensors NEW_FAST.safetensors -o temporal.safetensors
    python benchmarks/swap_temporal_frame.py livedenoise/weights/backbone-temporal.safetensors \
        livedenoise/weights/backbone-standard.safetensors -o backbone-temporal-standard.safetensors

The fusion was trained on the previous 2-D stage's outputs; ``benchmarks/bench_temporal.py`` decides whether
keeping it beats retraining it (``livedenoise pretrain --init NEW_FAST --preset temporal``). The output's metadata
records the swap as a stage and counts the steps of both parts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from livedenoise.checkpoint import load_checkpoint, save_checkpoint
    from livedenoise.models.temporal import temporal_from_frame_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("temporal", type=Path, help="the temporal checkpoint whose fusion is kept")
    ap.add_argument("frame", type=Path, help="the 2-D U-Net checkpoint to use as its 2-D stage")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.output.exists():
        ap.error(f"{args.output} exists; choose another file")
    t, f = load_checkpoint(args.temporal), load_checkpoint(args.frame)
    if t.arch != "unet-temporal" or f.arch != "unet":
        ap.error(f"expected a temporal checkpoint and a 2-D U-Net; got '{t.arch}' and '{f.arch}'")
    training = dict(t.training)
    fusion_stages = [s for s in training["stages"] if str(s.get("trained", "")).startswith("the temporal fusion")]
    fusion_steps = sum(int(s.get("steps", 0)) for s in fusion_stages)
    model, name, metrics = t.model, t.name, dict(t.metadata.get("metrics", {}))
    if list(f.model.widths) == list(t.model.frame.widths):
        t.model.frame.load_state_dict(f.model.state_dict())  # the same architecture, or this fails with its reason
        note = (f"2-D stage replaced by {f.name} after its GPU stage ({f.training['total_steps']} steps); the fusion "
                f"({fusion_steps} steps, trained on the previous 2-D stage) kept: it measured better than a fusion "
                "retrained on the new 2-D stage (benchmarks/bench_temporal.py)")
        stages = training["stages"]
    else:  # another width: a temporal network around this 2-D backbone, the fusion's weights copied in
        fusion = t.model.fusion
        model = temporal_from_frame_model(f.model, window=t.model.window, sigma=fusion.sigma, align=fusion.align)
        model.fusion.load_state_dict(fusion.state_dict())
        name = f"{t.name}-{f.name.removeprefix('backbone-')}"
        note = (f"the temporal network built around {f.name} (widths {list(f.model.widths)}, "
                f"{f.training['total_steps']} steps), with the fusion of {t.name} ({fusion_steps} steps, trained on "
                f"the outputs of a {list(t.model.frame.widths)} 2-D stage) copied in, not retrained")
        stages = [*f.training["stages"], *fusion_stages]
        # the fusion run's losses were measured with the other 2-D stage: not this model's
        for key in ("initial_val_loss", "best_val_loss", "best_step", "validations", "elapsed_s", "stopped"):
            training.pop(key, None)
        training.update(steps=0, continued_from=f"{f.name}, with the fusion of {t.name}")
        metrics = {"fusion": metrics["fusion"]} if "fusion" in metrics else {}
    training["stages"] = [*stages, {"steps": 0, "note": note}]
    training["total_steps"] = int(f.training["total_steps"]) + fusion_steps
    save_checkpoint(args.output, model, arch=t.arch, arch_kwargs=model.arch_kwargs, normalizer=t.normalizer,
                    training=training, metrics=metrics, name=name)
    print(f"wrote {args.output}: {training['total_steps']} steps in all ({fusion_steps} of the fusion)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
