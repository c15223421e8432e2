"""The arguments and checks shared by the commands that train and write one checkpoint (pretrain, finetune)."""
from __future__ import annotations

import argparse
from pathlib import Path

from livedenoise.diskspace import ensure_room
from livedenoise.errors import LivedenoiseError


def add_training_output_arguments(p: argparse.ArgumentParser) -> None:
    """``--seed``, ``--device``, ``-o/--output`` (the checkpoint to write) and ``--overwrite``."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true")


def check_training_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing checkpoint (unless ``overwrite``) or an unwritable folder now, not after the training."""
    if output.exists() and not overwrite:
        raise LivedenoiseError(f"{output}: already exists; choose another name or pass --overwrite")
    ensure_room(output.parent, 0)
