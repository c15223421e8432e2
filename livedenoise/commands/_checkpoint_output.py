"""The arguments and checks shared by the commands that write one file (pretrain, finetune: a checkpoint;
calibrate-camera: a camera calibration; export: a Model Zoo package)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

from livedenoise.commands._argtypes import int_range
from livedenoise.diskspace import ensure_room
from livedenoise.errors import LivedenoiseError


def add_training_output_arguments(p: argparse.ArgumentParser) -> None:
    """``--seed``, ``--device``, ``-o/--output`` (the checkpoint to write) and ``--overwrite``."""
    p.add_argument("--seed", type=int_range(0), default=0, help="random seed, an integer >= 0 (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true")


def check_output_file(output: Path, overwrite: bool, inputs: Iterable[Path | str | None] = (), *,
                      what: str = "checkpoint", suffix: str = ".safetensors") -> None:
    """Refuse, now rather than after the work: any of ``inputs`` (the images, pairs, calibration, backbone or package
    the command reads), which ``--overwrite`` must never replace; a folder; a name that does not end in ``suffix``; an
    existing ``what`` (unless ``overwrite``); an unwritable folder."""
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
            raise LivedenoiseError(f"{output}: is also an input of this command; the {what} would replace it. "
                                   "Choose another output name (inputs are never overwritten, --overwrite or not).")
    if output.is_dir():
        raise LivedenoiseError(f"{output}: is a folder; expected the {what}'s file name (e.g. "
                               f"{output / ('model' + suffix)})")
    if output.suffix.lower() != suffix:
        raise LivedenoiseError(f"{output}: a {what} is written as a {suffix} file; expected a name ending in "
                               f"{suffix} (e.g. {output.with_suffix(suffix).name})")
    if output.exists() and not overwrite:
        raise LivedenoiseError(f"{output}: already exists; choose another name or pass --overwrite")
    ensure_room(output.parent, 0)
