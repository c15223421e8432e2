"""Model files: one ``.safetensors`` file with the weights and everything needed to use them.

Why safetensors: a model file is something users download and share; a pickled file can run
arbitrary code when loaded, a safetensors file cannot. The file's header metadata holds, under
the key ``"livedenoise"``, a JSON document with the architecture name and arguments (the
network is rebuilt from code, never unpickled), the :class:`~livedenoise.normalization.Normalizer`
the network was trained with, training settings, metrics, creation date and library versions.
So a checkpoint alone reproduces the exact preprocessing, and its provenance can be read without
loading the weights (``read_metadata``).
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from livedenoise.errors import CheckpointError, LivedenoiseError
from livedenoise.normalization import Normalizer

log = logging.getLogger("livedenoise")

#: Key of the JSON document in the safetensors header metadata.
METADATA_KEY = "livedenoise"
#: Version of the metadata layout; bump on incompatible changes.
FORMAT_VERSION = 1
BACKBONE_PACKAGE = "livedenoise.weights"


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays, paths, tuples and dates JSON-serialisable."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, _dt.date, _dt.datetime, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _versions() -> dict[str, str]:
    from livedenoise import __version__

    return {
        "livedenoise": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Checkpoint:
    """A network ready to use, with the normaliser and provenance it was saved with."""

    model: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    normalizer: Normalizer
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    name: str = "unnamed"

    @property
    def training(self) -> dict[str, Any]:
        return dict(self.metadata.get("training") or {})

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.metadata.get("metrics") or {})

    def save(self, path: str | os.PathLike[str], *, name: str | None = None) -> Path:
        """Write this checkpoint to ``path`` (atomically); returns the path."""
        out = save_checkpoint(
            path, self.model, arch=self.arch, arch_kwargs=self.arch_kwargs, normalizer=self.normalizer,
            training=self.metadata.get("training"), metrics=self.metadata.get("metrics"),
            name=name or self.name, parent=self.metadata.get("parent"),
        )
        self.path = out
        return out

    def clone(self, *, name: str | None = None) -> Checkpoint:
        """Independent deep copy (weights included): fine-tune it without touching this one."""
        model = copy.deepcopy(self.model)
        metadata = copy.deepcopy(self.metadata)
        metadata["parent"] = {"name": self.name, "path": str(self.path) if self.path else None}
        return Checkpoint(
            model=model, arch=self.arch, arch_kwargs=copy.deepcopy(self.arch_kwargs),
            normalizer=self.normalizer.copy(), metadata=metadata, path=None, name=name or self.name,
        )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    normalizer: Normalizer,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    name: str | None = None,
    parent: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` and its metadata to one ``.safetensors`` file; returns the path.

    The file is written to a temporary file in the same folder and renamed into place, so a
    reader (e.g. the live session picking up a fresh fine-tune) never sees a half-written file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if not isinstance(normalizer, Normalizer):
        raise TypeError("save_checkpoint needs a livedenoise.normalization.Normalizer")
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name or path.stem,
        "arch": str(arch),
        "arch_kwargs": arch_kwargs,
        "normalizer": normalizer.to_dict(),
        "training": training or {},
        "metrics": metrics or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    if parent:
        meta["parent"] = parent
    try:
        text = json.dumps(meta, default=_json_default, allow_nan=True)
    except TypeError as exc:
        raise LivedenoiseError(f"Checkpoint metadata for {path} cannot be stored as JSON: {exc}.") from exc
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"Cannot write checkpoint {path}: {exc.strerror or exc}.") from exc
    try:
        save_file(tensors, tmp, metadata={METADATA_KEY: text})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; model files must be readable by other users (cluster workers)
        os.replace(tmp, path)
    except Exception as exc:  # OSError, or safetensors' own I/O error (a full disk)
        raise CheckpointError(f"Cannot write checkpoint {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.debug("Saved checkpoint %s (%s)", path, meta["name"])
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without building the network or reading the weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; expected a .safetensors file saved by livedenoise.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        if _is_torch_pickle(path):
            raise CheckpointError(
                f"Checkpoint {path} is a PyTorch pickle (torch.save), which livedenoise never loads (unpickling runs "
                "code); expected a .safetensors checkpoint saved by livedenoise (or a BioImage Model Zoo .zip "
                "package)."
            ) from None
        raise CheckpointError(
            f"Checkpoint {path} is not a readable safetensors file (truncated or corrupt: {exc}); expected a "
            ".safetensors checkpoint saved by livedenoise."
        ) from None
    if METADATA_KEY not in header and str(header.get("format", "")).startswith("livedenoise-camera-calibration"):
        raise CheckpointError(f"{path}: is a camera calibration (written by `livedenoise calibrate-camera`), not a "
                              "model; give it with --camera-calibration, and a model with --model")
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"Checkpoint {path} has no '{METADATA_KEY}' metadata; it was not saved by livedenoise "
            "(expected architecture and normalizer information in the file header)."
        )
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"Checkpoint {path} has corrupt metadata (invalid JSON: {exc}).") from exc
    missing = [k for k in ("arch", "arch_kwargs", "normalizer") if k not in meta]
    if missing or not isinstance(meta.get("arch_kwargs"), dict):
        raise CheckpointError(f"Checkpoint {path} metadata lacks {', '.join(missing) or 'valid arch_kwargs'}.")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {path} uses metadata format {version!r}, newer than this livedenoise understands "
            f"({FORMAT_VERSION}); update livedenoise."
        )
    return meta


def _is_torch_pickle(path: str | os.PathLike[str]) -> bool:
    """True for what ``torch.save`` writes: a zip archive holding a ``data.pkl``, or a bare pickle."""
    import zipfile

    if os.path.getsize(path) < 3:
        return False
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and last == b".":
        return True  # PROTO 2-5 ... STOP: a bare pickle (a safetensors header length may start with 0x80 too)
    if head == b"PK" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("data.pkl") for n in zf.namelist())
    return False


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint (never unpickles). Any problem -> :class:`CheckpointError` naming the file."""
    from safetensors import safe_open

    from livedenoise.models import build_model

    path = Path(path)
    meta = read_metadata(path)
    try:
        # The architecture is built on the meta device first (shapes only, no memory): a small file whose
        # metadata declares a huge network must fail on the shape check, not allocate tens of GB.
        with torch.device("meta"):
            skeleton = build_model(meta["arch"], **meta["arch_kwargs"])
    except LivedenoiseError as exc:
        raise CheckpointError(f"Checkpoint {path} describes a network that cannot be built: {exc}") from exc
    try:
        normalizer = Normalizer.from_dict(meta["normalizer"])
    except (LivedenoiseError, TypeError) as exc:
        raise CheckpointError(f"Checkpoint {path} has an invalid normalizer: {exc}") from exc
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"Checkpoint {path} weights cannot be read (truncated or corrupt: {exc}).") from exc
    expected = skeleton.state_dict()
    del skeleton
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with wrong shape (e.g. {k}: file {tuple(state[k].shape)}, "
                         f"network {tuple(expected[k].shape)})")
        raise CheckpointError(
            f"Checkpoint {path} weights do not match its architecture {meta['arch']!r} {meta['arch_kwargs']}: "
            + "; ".join(parts) + "."
        )
    non_finite = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if non_finite:
        raise CheckpointError(
            f"Checkpoint {path} holds non-finite weights (NaN or infinity) in {len(non_finite)} tensor(s), e.g. "
            f"{non_finite[0]}: the training that wrote it diverged, and every output would be NaN; use another model.")
    model = build_model(meta["arch"], **meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    if not (isinstance(device, torch.device) or device == "cpu"):
        from livedenoise.device import select_device

        device = select_device(device)  # refuses a missing accelerator instead of a torch traceback
    model.to(device).eval()
    return Checkpoint(
        model=model, arch=str(meta["arch"]), arch_kwargs=dict(meta["arch_kwargs"]), normalizer=normalizer,
        metadata=meta, path=path, name=str(meta.get("name") or path.stem),
    )


def available_backbones() -> list[str]:
    """Names of the backbones shipped in ``livedenoise/weights/`` (``backbone-{name}.safetensors``)."""
    try:
        folder = resources.files(BACKBONE_PACKAGE)
        names = [p.name for p in folder.iterdir()]
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n[len("backbone-"):-len(".safetensors")] for n in names
                  if n.startswith("backbone-") and n.endswith(".safetensors"))


from livedenoise.weights import DEFAULT_BACKBONE, TEMPORAL_BACKBONE  # noqa: E402,F401  (re-exported: the names users look for here)


def backbone_path(name: str = DEFAULT_BACKBONE) -> Path:
    """Path of a shipped backbone (it may not exist yet)."""
    folder = Path(str(resources.files(BACKBONE_PACKAGE)))
    return folder / f"backbone-{name}.safetensors"


def load_backbone(name: str = DEFAULT_BACKBONE, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a pretrained backbone shipped with livedenoise by name (e.g. ``"standard"``, ``"fast"``)."""
    path = backbone_path(name)
    if not path.is_file():
        names = available_backbones()
        listing = ", ".join(names) if names else "none are installed (run `livedenoise pretrain` to create one)"
        raise CheckpointError(f"Backbone {name!r} is not shipped ({path} is missing); available backbones: {listing}.")
    return load_checkpoint(path, device=device)
