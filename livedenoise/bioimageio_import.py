"""Run a BioImage Model Zoo model that livedenoise did not export (a CAREamics Noise2Void export, another lab's
denoiser) as ``--model`` for batch denoising, where its description allows it.

Why only "where it allows": livedenoise denoises frame by frame and tile by tile, in the frames' own units. A
package fits that when it maps one single-channel 2-D image (axes batch, channel of size 1?, y, x) to one image
of the same axes, of any size from a minimum in steps (a fixed size, which CAREamics writes from its example, is
run as multiples of it, with a warning), its weights load without running code shipped in the package
(TorchScript, or a PyTorch state dict whose architecture is a class of an installed library), and its pre- and
post-processing use fixed numbers
(``fixed_zero_mean_unit_variance``, ``scale_linear``, ``clip``, ``ensure_dtype``): those are folded into the
network, so every tile sees the same transform. Statistics of each whole image (``zero_mean_unit_variance``,
``scale_range``) would differ from tile to tile and are refused with one sentence, as are ONNX-only packages,
3-D or time axes and several channels.

Such a model has no noise model: ``denoise`` runs it on the raw values, without livedenoise's noise fit or
residual check, and it cannot be fine-tuned (``--adapt``, ``finetune``, live sessions refuse it).
"""
from __future__ import annotations

import importlib
import inspect
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from livedenoise.checkpoint import Checkpoint
from livedenoise.errors import CheckpointError
from livedenoise.normalization import Normalizer

log = logging.getLogger("livedenoise")

#: ``Checkpoint.arch`` of a model run from a foreign Model Zoo package.
FOREIGN_ARCH = "bioimageio"

#: Where a state-dict package's architecture may come from: importing a module runs its code, and calling the
#: class runs its constructor with the package's arguments, so only these libraries' networks are built.
ARCHITECTURE_SOURCES = ("careamics.", "torch.nn", "livedenoise.")
#: Functions (not classes) allowed as architectures: livedenoise's own export.
ARCHITECTURE_FUNCTIONS = (("livedenoise.bioimageio", "raw_to_denoised"),)

#: Processing steps with fixed numbers, which tiling cannot change.
FIXED_STEPS = ("fixed_zero_mean_unit_variance", "scale_linear", "clip", "ensure_dtype")


def is_foreign_package(path: str | os.PathLike[str]) -> bool:
    """True for a BioImage Model Zoo package without livedenoise's checkpoint in it (cheap: no YAML parsing)."""
    import zipfile

    from livedenoise.bioimageio import CHECKPOINT_ATTACHMENT, is_bioimageio_package

    p = Path(path)
    if not is_bioimageio_package(p):
        return False
    if p.is_dir():
        return not (p / CHECKPOINT_ATTACHMENT).is_file()
    if p.suffix.lower() in (".yaml", ".yml"):
        return not (p.parent / CHECKPOINT_ATTACHMENT).is_file()
    with zipfile.ZipFile(p) as z:
        return CHECKPOINT_ATTACHMENT not in z.namelist()


class ForeignNetwork(nn.Module):
    """A package's network between its fixed pre- and post-processing, on ``[B, 1, H, W]`` raw values.

    ``pre``/``post``: ``(scale, shift, low, high)``: ``clamp(x * scale + shift, low, high)`` (the folded steps).
    ``squeeze_channel``: the package's tensors have no channel axis. Inputs are padded (mirrored) to the sizes
    the description allows (``min_size`` plus a multiple of ``size_multiple``) and the output cropped back.
    The receptive field is measured, not trusted from a halo: on noise around ``level`` (the package's test
    input's median and spread), since a network on raw values may ignore inputs far below its range.
    """

    def __init__(self, net: nn.Module, pre: tuple[float, float, float, float],
                 post: tuple[float, float, float, float], *, squeeze_channel: bool,
                 steps: tuple[int, int] = (1, 1), min_sizes: tuple[int, int] = (1, 1),
                 level: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        for p in net.parameters():  # inference only; a TorchScript copy of trainable weights is not a leaf
            p.requires_grad_(False)
        self.net = net
        self.pre, self.post = pre, post
        self.squeeze_channel = bool(squeeze_channel)
        self.steps = (max(1, int(steps[0])), max(1, int(steps[1])))
        self.min_sizes = (max(1, int(min_sizes[0])), max(1, int(min_sizes[1])))
        self.size_multiple = math.lcm(*self.steps)  # where livedenoise starts tiles
        self.level = (float(level[0]), max(float(level[1]), 1e-6))
        self._radius: int | None = None

    def receptive_field_radius(self) -> int:
        """Measured once (:func:`livedenoise.models.empirical_receptive_field_radius`) on inputs at ``level``."""
        if self._radius is None:
            from livedenoise.models import empirical_receptive_field_radius

            self._radius = empirical_receptive_field_radius(_AtLevel(self))
        return self._radius

    def _allowed(self, n: int, axis: int) -> int:
        """The smallest size >= n the description allows on ``axis`` (0: y, 1: x): minimum + k * step."""
        least, step = self.min_sizes[axis], self.steps[axis]
        return least + -(-max(0, n - least) // step) * step

    @staticmethod
    def _affine(x: torch.Tensor, step: tuple[float, float, float, float]) -> torch.Tensor:
        scale, shift, low, high = step
        return torch.clamp(x * scale + shift, min=low, max=high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self._allowed(h, 0) - h, self._allowed(w, 1) - w
        x = self._affine(x, self.pre)
        if ph or pw:  # mirrored, as livedenoise's own networks pad; edge values where the image is too small
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        y = self.net(x[:, 0] if self.squeeze_channel else x)
        if self.squeeze_channel:
            y = y[:, None]
        return self._affine(y[..., :h, :w].float(), self.post)


class _AtLevel(nn.Module):
    """A foreign network fed ``level`` +- spread for probe inputs in [0, 1) (what the measurement draws)."""

    def __init__(self, model: ForeignNetwork) -> None:
        super().__init__()
        self.model = model
        self.size_multiple = max(model.size_multiple, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid, spread = self.model.level
        return self.model(mid + spread * (2.0 * x - 1.0))


def _test_level(descr: Any, package: Path) -> tuple[float, float]:
    """Median and spread (robust standard deviation) of the package's test input: where its network works."""
    import numpy as np

    from livedenoise.bioimageio import _file_name, _read_member

    try:
        data = np.load(io.BytesIO(_read_member(package, _file_name(descr.inputs[0].test_tensor.source))),
                       allow_pickle=False).astype(np.float64)
    except Exception:  # noqa: BLE001 - no readable test tensor: probe around 0
        return 0.0, 1.0
    q25, q50, q75 = np.percentile(data, [25, 50, 75])
    return float(q50), float(max((q75 - q25) / 1.349, 1e-3 * max(abs(q50), 1.0)))


def _number(value: Any, what: str, where: str) -> float:
    """One number from a kwarg that may be a per-channel list (of one channel)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise CheckpointError(f"{where}: {what} has {len(value)} per-channel values; livedenoise runs "
                                  "single-channel models only.")
        value = value[0]
    return float(value)


def _fold(steps: Any, where: str, kind: str) -> tuple[float, float, float, float]:
    """The fixed steps of a tensor's pre- or post-processing, folded into one clamp(x * scale + shift)."""
    scale, shift, low, high = 1.0, 0.0, float("-inf"), float("inf")
    for step in steps or []:
        sid = str(getattr(step, "id", ""))
        kw: Any = getattr(step, "kwargs", None)
        if sid == "fixed_zero_mean_unit_variance":
            mean, std = _number(kw.mean, "mean", where), _number(kw.std, "std", where)
            if std <= 0:
                raise CheckpointError(f"{where}: {kind} fixed_zero_mean_unit_variance has std {std}; expected > 0.")
            scale, shift = scale / std, (shift - mean) / std
            low, high = (low - mean) / std, (high - mean) / std
        elif sid == "scale_linear":
            gain, offset = _number(kw.gain, "gain", where), _number(kw.offset, "offset", where)
            scale, shift = scale * gain, shift * gain + offset
            low, high = sorted((low * gain + offset, high * gain + offset)) if gain else (offset, offset)
        elif sid == "clip":
            if getattr(kw, "min_percentile", None) is not None or getattr(kw, "max_percentile", None) is not None:
                raise CheckpointError(f"{where}: its {kind} clip uses percentiles of each whole image, which "
                                      "livedenoise's tile-by-tile denoising cannot reproduce.")
            lo = float(kw.min) if getattr(kw, "min", None) is not None else float("-inf")
            hi = float(kw.max) if getattr(kw, "max", None) is not None else float("inf")
            low, high = min(max(low, lo), hi), max(min(high, hi), lo)  # disjoint ranges end at the later clip's
        elif sid == "ensure_dtype":
            if not str(getattr(kw, "dtype", "float32")).startswith("float"):
                raise CheckpointError(f"{where}: its {kind} casts to {kw.dtype}; livedenoise runs models on float "
                                      "values.")
            continue  # float tensors throughout
        elif sid in ("zero_mean_unit_variance", "scale_range", "scale_mean_variance"):
            raise CheckpointError(
                f"{where}: its {kind} step {sid!r} uses statistics of each whole image, which livedenoise's "
                f"tile-by-tile denoising cannot reproduce; supported steps: {', '.join(FIXED_STEPS)}.")
        else:
            raise CheckpointError(f"{where}: its {kind} step {sid!r} is not supported; supported steps: "
                                  f"{', '.join(FIXED_STEPS)}.")
    return scale, shift, low, high


def _layout(axes: Any, where: str, kind: str) -> tuple[bool, tuple[int, int], tuple[int, int]]:
    """(has a channel axis, size steps of y and x, minimum sizes of y and x) of a single-channel 2-D tensor, else
    one sentence."""
    types = [str(getattr(a, "type", "")) for a in axes]
    ids = [str(getattr(a, "id", "")) for a in axes]
    expected = {("batch", "channel", "space", "space"), ("batch", "space", "space")}
    if tuple(types) not in expected or ids[-2:] != ["y", "x"]:
        raise CheckpointError(f"{where}: its {kind} axes are {', '.join(ids)}; livedenoise runs models of "
                              "single-channel 2-D images (batch, channel, y, x or batch, y, x).")
    has_channel = "channel" in types
    if has_channel:
        ch = axes[types.index("channel")]
        n = len(getattr(ch, "channel_names", []) or [])
        if n != 1:
            raise CheckpointError(f"{where}: its {kind} has {n} channels; livedenoise runs single-channel models.")
    steps, least = [1, 1], [1, 1]
    for i, a in enumerate(axes[-2:]):
        size = getattr(a, "size", None)
        # (a halo only marks unreliable border pixels of a same-size output: tiling with margins handles it)
        if float(getattr(a, "scale", 1.0) or 1.0) != 1.0 or int(getattr(size, "offset", 0) or 0):
            raise CheckpointError(f"{where}: its {kind} axis {a.id} is rescaled or offset; livedenoise runs models "
                                  "whose output has the input's pixels.")
        if isinstance(size, int):
            # A fixed size is often just the size of the example the exporter was given (CAREamics writes its
            # test image's): a convolutional network runs on any multiple of it, which is what is planned here.
            log.warning("%s: its %s is described with a fixed size of %d px; running it on sizes padded to "
                        "multiples of %d, as a convolutional network allows", where, kind, size, size)
            steps[i], least[i] = size, size
            continue
        steps[i] = max(1, int(getattr(size, "step", 1) or 1))
        least[i] = max(1, int(getattr(size, "min", 1) or 1))
    return has_channel, (steps[0], steps[1]), (least[0], least[1])


def _network(descr: Any, package: Path) -> tuple[nn.Module, str]:
    """The package's network, without running code shipped in it: TorchScript, else a state dict of an installed
    library's architecture."""
    from livedenoise.bioimageio import _file_name, _read_member

    weights = descr.weights
    ts = getattr(weights, "torchscript", None)
    if ts is not None:
        data = _read_member(package, _file_name(ts.source))
        return torch.jit.load(io.BytesIO(data), map_location="cpu"), "torchscript"
    sd = getattr(weights, "pytorch_state_dict", None)
    if sd is not None:
        arch = sd.architecture
        module_name = getattr(arch, "import_from", None)
        if module_name is None:
            raise CheckpointError(f"{package}: its network's code is a file inside the package; livedenoise does not "
                                  "run code shipped in a package (TorchScript weights, or an architecture from an "
                                  "installed library, run).")
        module_name, name = str(module_name), str(arch.callable)
        where = f"{module_name}.{name}"
        allowed_function = (module_name, name) in ARCHITECTURE_FUNCTIONS
        if not allowed_function and not any(module_name == s.rstrip(".") or module_name.startswith(s)
                                            for s in ARCHITECTURE_SOURCES):
            raise CheckpointError(f"{package}: its network is built by {where}; livedenoise builds state-dict "
                                  f"networks only from {', '.join(s.rstrip('.') for s in ARCHITECTURE_SOURCES)} "
                                  "(importing another module would run its code).")
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as exc:
            top = module_name.split(".")[0]
            raise CheckpointError(f"{package}: its network is {where}, which needs the Python package {top!r} "
                                  f"installed here (pip install {top}): {exc}") from None
        if not allowed_function and not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
            raise CheckpointError(f"{package}: {where} is not a torch network class.")
        data = _read_member(package, _file_name(sd.source))
        try:  # tensors only: never unpickle code from a package
            net = cls(**dict(getattr(arch, "kwargs", {}) or {}))
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=bool(getattr(sd, "strict", True)))
        except Exception as exc:  # noqa: BLE001 - constructors, torch.load and load_state_dict raise many types
            raise CheckpointError(f"{package}: its state-dict network ({where}) could not be built from its "
                                  f"weights: {str(exc).strip().splitlines()[0][:300]}") from None
        return net, "pytorch_state_dict"
    present = [k for k in ("onnx", "tensorflow_saved_model_bundle", "keras_hdf5", "tensorflow_js")
               if getattr(weights, k, None) is not None]
    raise CheckpointError(f"{package}: it has {', '.join(present) or 'no'} weights; livedenoise runs TorchScript "
                          "or PyTorch state-dict weights.")


def load_foreign_bioimageio(path: str | os.PathLike[str]) -> Checkpoint:
    """A :class:`Checkpoint` (``arch`` :data:`FOREIGN_ARCH`, identity normaliser) running a foreign package, or a
    :class:`~livedenoise.errors.CheckpointError` saying in one sentence why the package cannot run here."""
    from bioimageio.spec import InvalidDescr, load_model_description

    from livedenoise.bioimageio import _first_error

    package = Path(path)
    if package.is_dir() or package.suffix.lower() in (".yaml", ".yml"):
        raise CheckpointError(f"{package}: give another tool's Model Zoo package as its .zip (livedenoise records "
                              "and checks one file's sha256 for every job).")
    try:
        descr = load_model_description(package, perform_io_checks=False, format_version="latest")
    except Exception as exc:  # the spec library raises several types for unreadable packages
        raise CheckpointError(f"{package}: not a readable BioImage Model Zoo package ({_first_error(exc)}).") from None
    if isinstance(descr, InvalidDescr) or getattr(descr, "type", None) != "model":
        raise CheckpointError(f"{package}: not a valid BioImage Model Zoo model description.")
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise CheckpointError(f"{package}: it has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs; "
                              "livedenoise runs models of one image to one image.")
    inp, out = descr.inputs[0], descr.outputs[0]
    has_channel, step, least = _layout(inp.axes, str(package), "input")
    out_channel, _, _ = _layout(out.axes, str(package), "output")
    if out_channel != has_channel:
        raise CheckpointError(f"{package}: its input and output axes differ; livedenoise runs image-to-image models.")
    pre = _fold(getattr(inp, "preprocessing", None), str(package), "preprocessing")
    post = _fold(getattr(out, "postprocessing", None), str(package), "postprocessing")
    net, kind = _network(descr, package)
    model = ForeignNetwork(net.eval(), pre, post, squeeze_channel=not has_channel, steps=step, min_sizes=least,
                           level=_test_level(descr, package))
    identity = Normalizer(offset=0.0, gain=1.0, vst=False, scale=1.0)
    meta = {"foreign": {"package": str(package), "name": str(descr.name), "weights": kind,
                        "preprocessing": [str(s.id) for s in (getattr(inp, "preprocessing", None) or [])],
                        "postprocessing": [str(s.id) for s in (getattr(out, "postprocessing", None) or [])]}}
    return Checkpoint(model, FOREIGN_ARCH, {}, identity, metadata=meta, path=None, name=str(descr.name))


def refuse_training(ckpt: Checkpoint, what: str) -> None:
    """One sentence instead of a fine-tune of a foreign Model Zoo model (it has no noise model or livedenoise
    architecture to adapt and save)."""
    if ckpt.arch == FOREIGN_ARCH:
        raise CheckpointError(f"{ckpt.name!r} is a BioImage Model Zoo model run as it is; {what} needs a livedenoise "
                              "backbone ('fast', 'standard', 'temporal' or a .safetensors checkpoint).")


__all__ = ["FOREIGN_ARCH", "ForeignNetwork", "is_foreign_package", "load_foreign_bioimageio", "refuse_training"]
