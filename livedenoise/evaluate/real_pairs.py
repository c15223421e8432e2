"""The comparison on real low/high pairs (``livedenoise evaluate --pairs DIR``)."""
from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from livedenoise.checkpoint import Checkpoint
from livedenoise.errors import ConfigError, InputDataError
from livedenoise.evaluate.experiments import TRAINED_METHODS
from livedenoise.evaluate.methods import FitInfo, ProgressFn, Row, apply_method, scratch_model, with_normalizer
from livedenoise.evaluate.settings import EvalConfig
from livedenoise.metrics import score


def centre_crop(arr: np.ndarray, size: int | None) -> np.ndarray:
    """The centre `size`² of a 2D image (all of it when `size` is None or larger): every method sees the same crop."""
    if size is None:
        return arr
    h, w = arr.shape
    ch, cw = min(h, size), min(w, size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return arr[y0:y0 + ch, x0:x0 + cw]


def affine_sets_from(spec: str | Iterable[str] | None, sets: Iterable[str]) -> set[str]:
    """Which sets use the affine-fit metric: ``"all"``, ``"none"``, or names (comma-separated or a list)."""
    sets = set(sets)
    if spec is None or spec == "all":
        return sets
    if spec == "none":
        return set()
    names = {s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()}
    unknown = sorted(names - sets)
    if unknown:
        raise ConfigError(f"--affine names set(s) {', '.join(unknown)} that are not in the pair folder; "
                          f"expected 'all', 'none' or some of {', '.join(sorted(sets))}.")
    return names


def evaluate_pairs(folder: str | Path, config: EvalConfig, backbone: Checkpoint, *,
                   affine: str | Iterable[str] | None = "all", device: str = "auto",
                   progress: ProgressFn | None = None) -> list[Row]:
    """The same comparisons on real low/high pairs (``<set>/<name>_noisy.tif`` + ``_clean.tif``).

    Per evaluated pair: classical baselines, the backbone zero-shot, transfer and scratch Noise2Self
    trained on that noisy image alone (Wang's single-shot case), and ``pairs``: the backbone
    fine-tuned on up to ``real_max_train_pairs`` *other* pairs of the same set (leave-one-out;
    skipped for sets with one pair). Images are centre-cropped to ``real_crop`` (all methods alike).
    Scores use the clean image as reference; sets in ``affine`` use the affine-fit normalisation
    (the other one is kept in ``psnr_other``/``ssim_other``).
    """
    from livedenoise.device import select_device
    from livedenoise.training.finetune import finetune
    from livedenoise.training.pairs import load_pair_folder

    config.validate()
    dev = str(select_device(device))
    pairs = load_pair_folder(folder)
    by_set: dict[str, list] = {}
    for p in pairs:
        by_set.setdefault(p.set or "(root)", []).append(p)
    use_affine = affine_sets_from(affine, by_set)
    jobs = []
    for set_name, items in by_set.items():
        chosen = items[: config.real_max_pairs_per_set] if config.real_max_pairs_per_set else items
        for p in chosen:
            jobs.append((set_name, p, items))
    n_fits = sum(1 for m in config.real_methods if m in TRAINED_METHODS)
    total = max(1, len(jobs) * max(1, n_fits))
    done = 0
    rows: list[Row] = []
    for set_name, p, items in jobs:
        noisy = centre_crop(np.asarray(p.noisy), config.real_crop)
        clean = centre_crop(np.asarray(p.clean), config.real_crop).astype(np.float32)
        if min(noisy.shape) < 16:
            raise InputDataError(f"{p.noisy_path}: image {noisy.shape} is smaller than 16x16 pixels after cropping.")
        affine_here = set_name in use_affine
        for method in config.real_methods:
            info = FitInfo()
            ckpt: Checkpoint | None = None
            if method in TRAINED_METHODS:
                if progress is not None:
                    progress(f"{set_name}/{p.name}: {method}", done, total)
                t0 = time.perf_counter()
                start = scratch_model(backbone) if method.endswith("scratch") else backbone
                if method.startswith("pairs"):
                    others = [q for q in items if q.name != p.name][: config.real_max_train_pairs]
                    if not others:
                        done += 1
                        continue  # leave-one-out needs another pair in the set
                    tn = [centre_crop(np.asarray(q.noisy), config.real_crop) for q in others]
                    tc = [centre_crop(np.asarray(q.clean), config.real_crop).astype(np.float32) for q in others]
                    res = finetune(start, tn, tc, training=config.training(method=method), seed=config.seed,
                                   device=dev)
                else:
                    res = finetune(start, [noisy], None, training=config.training(method=method), seed=config.seed,
                                   device=dev)
                ckpt = res.checkpoint
                info = FitInfo.from_fit(time.perf_counter() - t0, res.fit)
                done += 1
            elif method == "backbone":
                ckpt = with_normalizer(backbone, [noisy])
            (out,), ms = apply_method(method, ckpt, [noisy], device=dev)
            s = score(clean, out, affine=affine_here, frc=True)
            o = score(clean, out, affine=not affine_here)
            rows.append(Row(experiment="real", method=method, image=p.name, set=set_name, affine=affine_here,
                            mse=s.mse, mae=s.mae, psnr=s.psnr, ssim=s.ssim,
                            frc=s.frc if s.frc is not None else math.nan,
                            psnr_other=o.psnr, ssim_other=o.ssim, infer_ms=ms, **info.row_fields()))
    if progress is not None:
        progress("done", total, total)
    return rows
