"""Real structure in the training bank, measured leave-one-set-out beside VST+BM3D.

    python benchmarks/bench_real_structure.py                 # 1,000 steps per arm, every dev set
    python benchmarks/bench_real_structure.py --steps 200 --sets w2s_widefield rcan_isim

Does training on real high-SNR images (the clean halves of the dev pairs, cut into fields, with fresh
camera noise; :mod:`livedenoise.training.realbank`) make the backbone better on real data? Every arm
continues the same backbone (``--init``, default the shipped fast one) for the same ``--steps`` at the
same learning rate and seed, so the only difference is the data:

* ``synthetic``: the synthetic bank only (the control: what the extra steps alone give);
* ``real, set held out``: for each dev set, a model whose real fields come from every *other* set; that
  set's pairs are scored with it (leave one set out: no image of a set, clean or noisy, is seen before
  it is scored);
* ``real, all sets``: real fields from every set (the candidate to ship). Its dev scores saw the sets'
  clean images and are reported for comparison only; on the simulator every arm is out of sample.

Scoring is ``bench_backbone``'s: the default ``denoise`` path (noise model fitted to each image), full
dev images, the simulator's held-out fields at five photon levels and two optics, VST+BM3D from the
same noise fit (cached). Models are written to ``--train-dir`` and reused when they already hold the
requested steps, so an interrupted run resumes arm by arm.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backbone import cached_bm3d, dev_cases, model_outputs, render, score_rows, sim_cases
from common import DEFAULT_OUTPUT, REAL_PAIRS_DEV, REPO, machine, publish

SYNTHETIC = "synthetic"
ALL = "real, all sets"
HELD_OUT = "real, set held out"


def _steps_of(path: Path) -> int | None:
    from livedenoise.checkpoint import load_checkpoint

    try:
        return int((load_checkpoint(path).training or {}).get("total_steps", -1))
    except Exception:  # noqa: BLE001 - an unreadable or interim file is retrained
        return None


def train_arm(path: Path, init: str, structure: list[tuple[str, np.ndarray]] | None, args) -> dict:
    """Continue ``init`` for ``args.steps`` steps (synthetic bank, plus ``structure`` fields when given) into
    ``path``."""
    from livedenoise.modelspec import load_model_spec
    from livedenoise.training.pretrain import pretrain

    base = load_model_spec(init)
    target = int((base.training or {}).get("total_steps", 0)) + args.steps
    if path.exists() and _steps_of(path) == target:
        print(f"[real-structure] reusing {path} ({target} steps in all)", flush=True)
        return {"path": str(path), "reused": True}
    print(f"[real-structure] training {path.name}: {args.steps} steps"
          f"{f' with {len(structure)} structure images' if structure else ' (synthetic only)'}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = pretrain(None, init=base, lr=args.lr, max_steps=args.steps, patience=10**6, steps_per_validation=100,
                   batch_size=8, patch_size=96, bank_fields=600, seed=args.seed, cache_dir=args.cache_dir,
                   checkpoint_every_s=None, output=path, device="cpu",
                   structure_images=[im for _, im in structure] if structure else None,
                   structure_names=[n for n, _ in structure] if structure else None,
                   structure_weight=args.weight)
    if res.fit.steps != args.steps:
        raise SystemExit(f"{path}: ran {res.fit.steps} of {args.steps} steps")
    return {"path": str(path), "reused": False, "seconds": time.perf_counter() - t0, "steps": res.fit.steps,
            "best_step": res.fit.best_step, "val_loss": res.fit.best_val_loss}


def main(argv: list[str] | None = None) -> int:
    import logging

    from livedenoise.training.pairs import load_pair_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", default="fast", help="backbone every arm continues (default the shipped fast)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight", type=float, default=0.5, help="share of batches from real structure (default 0.5)")
    ap.add_argument("--seed", type=int, default=5, help="training seed (5: the cached bank of the shipped stage 4)")
    ap.add_argument("--sets", nargs="*", help="dev sets to hold out in turn (default: all but nucleus_migration)")
    ap.add_argument("--pairs", type=Path, default=REAL_PAIRS_DEV)
    ap.add_argument("--train-dir", type=Path, default=REPO / "runs" / "train" / "real-structure")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "livedenoise")
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.WARNING)
    pairs = load_pair_folder(args.pairs)
    all_sets = list(dict.fromkeys(p.set for p in pairs))
    held = args.sets or [s for s in all_sets if s != "nucleus_migration"]
    clean = [(f"{p.set}/{p.name}", np.asarray(p.clean)) for p in pairs]
    tag = f"{Path(args.init).stem}-{args.steps}-w{args.weight:g}-s{args.seed}"
    training = {SYNTHETIC: train_arm(args.train_dir / f"{tag}-synthetic.safetensors", args.init, None, args)}
    for s in held:
        training[s] = train_arm(args.train_dir / f"{tag}-without-{s}.safetensors", args.init,
                                [c for c in clean if not c[0].startswith(s + "/")], args)
    training[ALL] = train_arm(args.train_dir / f"{tag}-all.safetensors", args.init, clean, args)

    cases = [c for c in dev_cases(args.pairs, False) if c.group in held]
    if not args.no_sim:
        cases += sim_cases(False)
    frames = [c.noisy for c in cases]
    methods: dict[str, tuple[list[np.ndarray], float, dict]] = {
        "noisy": ([np.asarray(f, np.float32) for f in frames], 0.0, {})}
    bm, secs = cached_bm3d(frames)
    methods["vst+bm3d"] = (bm, float(np.nanmean(secs)), {})
    print("[real-structure] scoring", flush=True)
    methods[args.init] = model_outputs(args.init, frames)
    methods[SYNTHETIC] = model_outputs(training[SYNTHETIC]["path"], frames)
    everything = model_outputs(training[ALL]["path"], frames)
    # the held-out column: each dev set by the model that never saw it; simulator fields by the all-sets model
    out = list(everything[0])
    for s in held:
        idx = [i for i, c in enumerate(cases) if c.group == s]
        if idx:
            own = model_outputs(training[s]["path"], [frames[i] for i in idx])
            for k, i in enumerate(idx):
                out[i] = own[0][k]
    methods[HELD_OUT] = (out, everything[1], {**everything[2], "name": "each set by the model trained without it"})
    methods[ALL] = everything
    rows = score_rows(cases, methods)
    labels = [args.init, SYNTHETIC, HELD_OUT, ALL]
    payload = {"machine": machine(), "quick": False, "command": "python benchmarks/bench_real_structure.py "
               + " ".join(argv if argv is not None else sys.argv[1:]),
               "models": {k: {**methods[k][2], "seconds_per_image": methods[k][1]} for k in labels},
               "bm3d_seconds_per_image": methods["vst+bm3d"][1], "rows": rows, "training": training,
               "steps": args.steps, "lr": args.lr, "weight": args.weight, "seed": args.seed, "held_out_sets": held}
    md = render(payload).replace("# Backbones vs VST+BM3D",
                                 "# Real structure in the training bank (leave one set out)", 1)
    md += ("\n`real, set held out`: each dev set scored by the model trained without any image of it; on the simulator "
           "this column is the all-sets model. `real, all sets` saw every dev set's clean images: its dev rows are not "
           "out of sample.\n")
    publish(args.output, "real-structure", payload, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
