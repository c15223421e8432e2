"""Resolve what a user types after ``--model`` / ``--backbone``: a shipped backbone name or a checkpoint path."""
from __future__ import annotations

from pathlib import Path

from livedenoise.checkpoint import Checkpoint, load_backbone, load_checkpoint

SHIPPED = ("fast", "standard", "temporal")


def load_model_spec(spec: str | Path, device: str = "cpu") -> Checkpoint:
    """``'fast'``/``'standard'``/``'temporal'`` -> the shipped backbone; anything else is a ``.safetensors`` checkpoint path."""
    if isinstance(spec, str) and spec in SHIPPED:
        return load_backbone(spec, device=device)
    return load_checkpoint(Path(spec), device=device)
