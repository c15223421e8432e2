"""The arguments and checks shared by the commands that train and write one checkpoint (pretrain, finetune)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

from livedenoise.diskspace import ensure_room
from livedenoise.errors import LivedenoiseError


def add_training_output_arguments(p: argparse.ArgumentParser) -> None:
    """``--seed``, ``--device``, ``-o/--output`` (the checkpoint to write) and ``--overwrite``."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true")


def check_training_output(output: Path, overwrite: bool, inputs: Iterable[Path | str | None] = ()) -> None:
    """Refuse, now rather than after the training: any of ``inputs`` (the images, pairs, calibration or backbone the
    command reads), which ``--overwrite`` must never replace; a folder; a name that is not a ``.safetensors`` file; an
    existing checkpoint (unless ``overwrite``); an unwritable folder."""
    for source in inputs:
        if source is None:
            continue
        path = Path(source)
        if not path.exists():  # a shipped backbone's name reads the package's weights file
            from livedenoise.checkpoint import backbone_path

            path = backbone_path(str(source))
            if not path.is_file():
                continue  # a file the command will report missing itself
        if (output.exists() and os.path.samefile(path, output)) or path.resolve() == output.resolve():
            raise LivedenoiseError(f"{output}: is also an input of this command; the checkpoint would replace it. "
                                   "Choose another output name (inputs are never overwritten, --overwrite or not).")
    if output.is_dir():
        raise LivedenoiseError(f"{output}: is a folder; expected the checkpoint's file name (e.g. "
                               f"{output / 'model.safetensors'})")
    if output.suffix.lower() != ".safetensors":
        raise LivedenoiseError(f"{output}: a checkpoint is written as a .safetensors file; expected a name ending in "
                               f".safetensors (e.g. {output.with_suffix('.safetensors').name})")
    if output.exists() and not overwrite:
        raise LivedenoiseError(f"{output}: already exists; choose another name or pass --overwrite")
    ensure_room(output.parent, 0)
