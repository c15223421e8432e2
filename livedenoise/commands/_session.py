"""Shared set-up of live sessions for `livedenoise demo` and `livedenoise live`."""
from __future__ import annotations

import argparse
from pathlib import Path

from livedenoise.config import Settings, load_settings
from livedenoise.errors import ConfigError, LivedenoiseError


def add_session_arguments(p: argparse.ArgumentParser) -> None:
    """Options common to every live session."""
    p.add_argument("--config", type=Path, help="session TOML with [microscope], [training], [live] tables (default config/session.toml)")
    p.add_argument("--mode", choices=["pairs", "self"], help="adapt from calibration pairs or self-supervised on live frames")
    p.add_argument("--backbone", help="'fast', 'standard' or a checkpoint path")
    p.add_argument("--finetune-seconds", type=float, help="time budget for background fine-tuning")
    p.add_argument("--positions", type=int, help="stage positions for calibration pairs")
    p.add_argument("--roi", help="simulated field of view WxH, e.g. 256x256")
    p.add_argument("--camera-calibration", type=Path, help="file from `livedenoise calibrate-camera` (optional)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("-o", "--output", type=Path, default=Path("runs/session"), help="folder for raw, denoised and the model")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty output folder")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the config file with command-line overrides applied (validated)."""
    s = load_settings(args.config)
    live = {k: v for k, v in {"mode": args.mode, "backbone": args.backbone,
                              "finetune_time_budget_s": args.finetune_seconds,
                              "calibration_positions": args.positions}.items() if v is not None}
    micro = {}
    if args.roi:
        try:
            w, h = (int(v) for v in args.roi.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--roi {args.roi!r}: expected WIDTHxHEIGHT, e.g. 256x256") from None
        micro = {"roi_width": w, "roi_height": h}
    try:
        from pydantic import ValidationError

        return s.model_copy(update={"live": s.live.model_validate({**s.live.model_dump(), **live}),
                                    "microscope": s.microscope.model_validate({**s.microscope.model_dump(), **micro})})
    except ValidationError as exc:
        from simulators.config import describe_validation_error

        raise ConfigError(describe_validation_error(exc, "command line")) from None


def prepare_output(path: Path, overwrite: bool) -> Path:
    """Create the output folder; refuse a non-empty one unless ``overwrite`` (raw data is never replaced)."""
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise LivedenoiseError(f"{path}: output folder is not empty; choose another with -o or pass --overwrite")
        import shutil

        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
