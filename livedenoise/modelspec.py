"""Resolve what a user types after ``--model`` / ``--backbone``: a shipped backbone name, a checkpoint path, or a
BioImage Model Zoo package that livedenoise exported (its checkpoint is taken out of the package)."""
from __future__ import annotations

from pathlib import Path

from livedenoise.checkpoint import Checkpoint, load_backbone, load_checkpoint

SHIPPED = ("fast", "standard", "temporal")


def model_file(spec: str | Path) -> Path:
    """The ``.safetensors`` file behind a path: the path itself, or the checkpoint inside a bioimage.io package
    (``.zip``, folder or ``rdf.yaml``; unpacked once into the cache, verified by its sha256)."""
    from livedenoise.bioimageio import checkpoint_from_bioimageio, is_bioimageio_package
    from livedenoise.errors import CheckpointError

    path = Path(spec)
    if is_bioimageio_package(path):
        return checkpoint_from_bioimageio(path)
    if path.suffix.lower() == ".zip" and path.is_file():
        raise CheckpointError(f"{path}: a .zip that is not a BioImage Model Zoo package (no rdf.yaml in it, or not a "
                              "readable zip); expected a package from `livedenoise export` or a .safetensors checkpoint.")
    return path


def load_model_spec(spec: str | Path, device: str = "cpu") -> Checkpoint:
    """``'fast'``/``'standard'``/``'temporal'`` -> the shipped backbone; anything else is a ``.safetensors`` checkpoint
    path or a bioimage.io package exported by livedenoise."""
    if isinstance(spec, str) and spec in SHIPPED:
        return load_backbone(spec, device=device)
    return load_checkpoint(model_file(spec), device=device)
