"""The one resolver of what a user names as a model (``--model``, ``--backbone``, ``Denoiser("fast")``,
``denoise_dataset(model=...)``, a live session's backbone): a shipped backbone name, a checkpoint path, or a
BioImage Model Zoo package that livedenoise exported (its checkpoint is taken out of the package).

Every entry point goes through :func:`model_path`, so a name that works in one place works in all of them and a
missing or foreign file is refused with the same sentence everywhere."""
from __future__ import annotations

import os
from pathlib import Path

from livedenoise.checkpoint import Checkpoint, available_backbones, backbone_path, load_checkpoint
from livedenoise.errors import CheckpointError

SHIPPED = ("fast", "standard", "lite", "temporal", "temporal-standard", "temporal-lite")


def is_backbone_name(spec: object) -> bool:
    """True for a shipped or installed backbone's name (``"fast"``), as opposed to a path."""
    return (isinstance(spec, str) and os.path.sep not in spec and not spec.endswith((".safetensors", ".zip"))
            and (spec in SHIPPED or spec in available_backbones()))


def model_file(spec: str | os.PathLike[str]) -> Path:
    """The ``.safetensors`` file behind a path: the path itself, or the checkpoint inside a bioimage.io package
    (``.zip``, folder or ``rdf.yaml``; unpacked once into the cache, verified by its sha256)."""
    from livedenoise.bioimageio import checkpoint_from_bioimageio, is_bioimageio_package

    path = Path(spec)
    if is_bioimageio_package(path):
        return checkpoint_from_bioimageio(path)
    if path.suffix.lower() == ".zip" and path.is_file():
        raise CheckpointError(f"{path}: a .zip that is not a BioImage Model Zoo package (no rdf.yaml in it, or not a "
                              "readable zip); expected a package from `livedenoise export` or a .safetensors "
                              "checkpoint.")
    return path


def model_path(spec: str | os.PathLike[str]) -> Path:
    """The checkpoint file a model name or path stands for, checked to exist (a :class:`CheckpointError` names it
    otherwise)."""
    if is_backbone_name(spec):
        path = backbone_path(str(spec))
        if not path.is_file():
            names = available_backbones()
            listing = ", ".join(names) if names else "none are installed (run `livedenoise pretrain` to create one)"
            raise CheckpointError(f"Backbone {spec!r} is not installed ({path} is missing); available backbones: "
                                  f"{listing}.")
        return path
    if not Path(spec).exists():
        raise CheckpointError(f"Model {str(spec)!r} is neither a shipped backbone ({', '.join(SHIPPED)}) nor an "
                              "existing checkpoint file (.safetensors) or BioImage Model Zoo package (.zip).")
    checkpoint = model_file(spec)
    if not checkpoint.is_file():
        raise CheckpointError(f"Model {str(spec)!r} is not a checkpoint file (.safetensors) or a BioImage Model Zoo "
                              "package exported by livedenoise.")
    return checkpoint


def load_model_spec(spec: str | os.PathLike[str], device: str = "cpu", *, foreign: bool = False) -> Checkpoint:
    """Load what :func:`model_path` resolves: ``'fast'``/``'standard'``/``'temporal'`` -> the shipped backbone;
    anything else is a ``.safetensors`` checkpoint path or a bioimage.io package exported by livedenoise.

    ``foreign``: the caller runs a package from another tool as it is (the :class:`~livedenoise.inference.Denoiser`,
    an attached acquisition, napari's widgets; :mod:`livedenoise.bioimageio_import`); everywhere else such a package
    is refused in one sentence, because fine-tuning, noise fitting, live sessions and export need a livedenoise
    network."""
    if not is_backbone_name(spec) and Path(spec).exists():
        from livedenoise.bioimageio_import import is_foreign_package, load_foreign_bioimageio

        if is_foreign_package(spec):
            if not foreign:
                raise CheckpointError(
                    f"{spec}: a BioImage Model Zoo model from another tool runs only as it is, with `livedenoise "
                    "denoise --model`, `Denoiser(...)`, an attached acquisition or napari's Denoise layer and Live "
                    "denoise; fine-tuning, calibration, live sessions and export need a livedenoise model ("
                    f"{', '.join(repr(name) for name in SHIPPED)}, a .safetensors checkpoint or a package livedenoise "
                    "exported).")
            return load_foreign_bioimageio(spec)
    return load_checkpoint(model_path(spec), device=device)
