"""livedenoise: real-time transfer-learned denoising for Micro-Manager / pycromanager.

The names a user needs, importable from here (``from livedenoise import Denoiser, denoise_dataset``). They are
loaded on first use, so ``import livedenoise`` stays light (no torch) for the command line and for tools that only
read a version or catch an error.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from livedenoise.errors import (
    BatchIncomplete,
    CheckpointError,
    ConfigError,
    InputDataError,
    LivedenoiseError,
    MicroManagerUnavailable,
)

#: public name -> module that defines it
_LAZY = {
    "Denoiser": "livedenoise.inference",
    "denoise_dataset": "livedenoise.batch",
    "denoise_array": "livedenoise.arrays",
    "open_dataset": "livedenoise.io",
    "read_provenance": "livedenoise.io",
    "load_backbone": "livedenoise.checkpoint",
    "load_checkpoint": "livedenoise.checkpoint",
    "save_checkpoint": "livedenoise.checkpoint",
    "Checkpoint": "livedenoise.checkpoint",
    "fit_noise_model": "livedenoise.noise_model",
    "Normalizer": "livedenoise.normalization",
    "finetune": "livedenoise.training.finetune",
    "TrainingConfig": "livedenoise.config",
    "LiveConfig": "livedenoise.config",
    "SessionSettings": "livedenoise.config",
    "load_session_settings": "livedenoise.config",
    "LiveSession": "livedenoise.acquisition.session",
    "AttachedDenoiser": "livedenoise.attach",
    "PycromanagerDenoiser": "livedenoise.attach",
    "MDADenoiser": "livedenoise.attach",
    "CameraCalibration": "livedenoise.camera_calibration",
}

__all__ = ["__version__", "BatchIncomplete", "CheckpointError", "ConfigError", "InputDataError", "LivedenoiseError",
           "MicroManagerUnavailable", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'livedenoise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
