"""A whole evaluation: run, result written with its report, read back (:func:`run_evaluation`)."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from livedenoise.checkpoint import Checkpoint
from livedenoise.errors import InputDataError
from livedenoise.evaluate.machine import machine_info
from livedenoise.evaluate.methods import Evaluator, ProgressFn, Row
from livedenoise.evaluate.real_pairs import evaluate_pairs
from livedenoise.evaluate.report import write_report
from livedenoise.evaluate.result import EvalResult
from livedenoise.evaluate.settings import EvalConfig, preset


def run_evaluation(output: str | Path, config: EvalConfig | None = None, *, backbone: Checkpoint,
                   pairs_dir: str | Path | None = None, affine: str | Iterable[str] | None = "all",
                   device: str = "auto", progress: ProgressFn | None = None, plots: bool = True) -> EvalResult:
    """Run the evaluation and write ``report.md``, ``results.json``, ``results.csv`` and PNG plots to ``output``.

    Without ``pairs_dir`` the simulated experiments of ``config`` run; with it, the real-pair comparison.
    """
    config = (config or preset("quick")).validate()
    t0 = time.perf_counter()
    if pairs_dir is not None:
        rows = evaluate_pairs(pairs_dir, config, backbone, affine=affine, device=device, progress=progress)
        source = str(pairs_dir)
    else:
        rows = Evaluator(config, backbone, device=device, progress=progress).run()
        source = "simulator"
    import torch

    dev = "cuda" if (device == "auto" and torch.cuda.is_available()) else device
    result = EvalResult(rows, config, machine_info(dev), backbone.name, time.perf_counter() - t0, source=source)
    result.files = write_report(result, Path(output), plots=plots)
    return result


def load_result(path: str | Path) -> EvalResult:
    """Read back a ``results.json`` written by :func:`run_evaluation` (a file or its folder).

    With :func:`livedenoise.evaluate.report.write_report` this re-renders a report (e.g. after the
    report code changed) without re-running any fit.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text())
        known = {f.name for f in fields(EvalConfig)}
        stored: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data["config"].items()
                                  if k in known}
        cfg = EvalConfig(**stored)
        metric_fields = {"mse", "mae", "psnr", "ssim", "frc", "psnr_other", "ssim_other", "mse_flat", "psnr_flat",
                         "ssim_flat"}

        def value(k, v):
            if k in metric_fields:
                return math.nan if v is None else (math.inf if v == "inf" else -math.inf if v == "-inf" else float(v))
            return v

        rows = [Row(**{k: value(k, v) for k, v in r.items()}) for r in data["rows"]]
        return EvalResult(rows, cfg, data["machine"], data["backbone"], float(data["seconds"]),
                          source=data.get("source", "simulator"))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputDataError(f"{p}: not a readable evaluation result ({exc.__class__.__name__}: {exc}).") from exc
