"""Run a BioImage Model Zoo model that livedenoise did not export (a CAREamics Noise2Void export, another lab's
denoiser) as ``--model`` for batch denoising, where its description allows it.

Why only "where it allows": livedenoise denoises frame by frame, in the frames' own units. A package fits that when
it maps one single-channel 2-D image (axes batch, channel of size 1?, y, x) to one image of the same axes, of any
size from a minimum in steps (a fixed size, which CAREamics writes from its example, is run as multiples of it, with
a warning), and its weights load without running code shipped in the package: TorchScript, a PyTorch state dict
whose architecture is a class of an installed library, or ONNX (run by ONNX Runtime, on the CPU).

Pre- and post-processing run as the Model Zoo defines them. Steps with fixed numbers (``fixed_zero_mean_unit_variance``,
``scale_linear``, ``clip``, ``ensure_dtype``) are folded into one ``clamp(x * a + b)``, the same on every tile.
Steps that take statistics of each image (``zero_mean_unit_variance``, ``scale_range``, percentile ``clip``) are
computed on each whole frame, so such a model is never run tile by tile (a tile's statistics would differ from its
frame's). One frame is one sample: statistics that a description takes over the batch too are the frame's, as when
a Model Zoo runner is given one image. ``scale_mean_variance`` (a second tensor's statistics) and steps that are not
denoising (``sigmoid``, ``binarize``, ``softmax``) are refused with one sentence, as are 3-D or time axes and several
channels.

Such a model has no noise model: ``denoise`` runs it on the raw values, without livedenoise's noise fit or
residual check, and it cannot be fine-tuned (``--adapt``, ``finetune``, live sessions' adaptation refuse it).
"""
from __future__ import annotations

import importlib
import inspect
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from livedenoise.checkpoint import Checkpoint
from livedenoise.errors import CheckpointError
from livedenoise.modelspec import SHIPPED
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
#: Processing steps computed from each whole frame (a frame-by-frame, untiled run).
IMAGE_STATISTIC_STEPS = ("zero_mean_unit_variance", "scale_range", "clip (percentiles)")


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


@dataclass(frozen=True)
class Affine:
    """Fixed steps folded into one ``clamp(x * scale + shift, low, high)``."""

    scale: float = 1.0
    shift: float = 0.0
    low: float = float("-inf")
    high: float = float("inf")

    def apply(self, x: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        return torch.clamp(x * self.scale + self.shift, min=self.low, max=self.high)

    @property
    def is_identity(self) -> bool:
        return (self.scale, self.shift, self.low, self.high) == (1.0, 0.0, float("-inf"), float("inf"))


@dataclass(frozen=True)
class ImageStatistic:
    """A step computed from each whole frame, as the Model Zoo's own runner (bioimageio.core) computes it.

    ``zero_mean_unit_variance``: ``(x - mean) / (std + eps)`` (population std); ``scale_range``:
    ``(x - p_low) / (p_high - p_low + eps)``; ``clip``: between fixed bounds or percentiles (``low``/``high``
    fixed where given). Percentiles are numpy's linear ones. As in bioimageio.core, every statistic is the *raw
    input frame's* (it computes them all once, before the first step), whichever step uses it. They carry no
    gradient: the receptive-field probe then measures the network's own reach, not the statistics' (the frame).
    """

    kind: str
    lower_percentile: float = 0.0
    upper_percentile: float = 100.0
    eps: float = 1e-6
    low: float | None = None
    high: float | None = None

    def apply(self, x: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        """This step on ``x``, with the statistics of ``raw`` (the frames as given; ``x`` itself if None)."""
        scale, shift, lo, hi = self._coefficients(x if raw is None else raw)
        y = x * scale.to(x.dtype) + shift.to(x.dtype)
        return y if lo is None or hi is None else torch.maximum(torch.minimum(y, hi.to(x.dtype)), lo.to(x.dtype))

    def as_affine(self, raw: torch.Tensor) -> Affine:
        """The fixed step this one is with the statistics of ``raw`` (its first frame): what the receptive-field
        probe runs, so that changing far pixels changes no statistic."""
        scale, shift, lo, hi = (None if v is None else float(v.flatten()[0]) for v in self._coefficients(raw[:1]))
        assert scale is not None and shift is not None  # always computed
        return Affine(scale, shift, float("-inf") if lo is None else lo, float("inf") if hi is None else hi)

    def _coefficients(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                        torch.Tensor | None]:
        """Per frame (float64, broadcasting over ``raw``): the step as ``x * scale + shift``, then clipped to
        ``[low, high]`` where those are not None."""
        if self.kind == "zero_mean_unit_variance":
            d = raw.detach().double()
            mean, std = d.mean(dim=(-2, -1), keepdim=True), d.std(dim=(-2, -1), correction=0, keepdim=True)
            return 1.0 / (std + self.eps), -mean / (std + self.eps), None, None
        lo, hi = self._percentiles(raw)
        if self.kind == "scale_range":
            return 1.0 / (hi - lo + self.eps), -lo / (hi - lo + self.eps), None, None
        return torch.ones_like(lo), torch.zeros_like(lo), lo, hi  # clip

    def _percentiles(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame lower and upper bounds (float64), shaped to broadcast over ``x`` ([B, C, H, W])."""
        import numpy as np

        flat = x.detach().double().cpu().numpy().reshape(x.shape[0], -1)  # torch.quantile stops at 16 Mpx
        qs = np.percentile(flat, [self.lower_percentile, self.upper_percentile], axis=1)  # [2, B]
        if self.low is not None:
            qs[0] = self.low
        if self.high is not None:
            qs[1] = self.high
        bounds = torch.as_tensor(qs, dtype=torch.float64, device=x.device).reshape(2, x.shape[0],
                                                                                    *([1] * (x.dim() - 1)))
        return bounds[0], bounds[1]


Step = Affine | ImageStatistic


def apply_steps(x: torch.Tensor, steps: tuple[Step, ...], raw: torch.Tensor) -> torch.Tensor:
    """``steps`` in order on ``x``; statistics are those of ``raw``, the input frames as given."""
    for step in steps:
        x = step.apply(x, raw)
    return x


class ForeignNetwork(nn.Module):
    """A package's network between its pre- and post-processing, on ``[B, 1, H, W]`` raw values.

    ``pre``/``post``: the processing steps (:class:`Affine` for folded fixed steps, :class:`ImageStatistic` for
    each frame's statistics; with any of those, ``whole_frames`` is True and the Denoiser never tiles).
    ``squeeze_channel``: the package's tensors have no channel axis. Inputs are mirrored by the reach on every side
    and padded to the sizes the description allows (``min_size`` plus a multiple of ``size_multiple``), and the
    output is cropped back (see :meth:`forward`).
    The receptive field is measured, not trusted from a halo: on noise around ``level`` (the package's test
    input's median and spread), since a network on raw values may ignore inputs far below its range.
    """

    def __init__(self, net: nn.Module, pre: tuple[Step, ...], post: tuple[Step, ...], *, squeeze_channel: bool,
                 steps: tuple[int, int] = (1, 1), min_sizes: tuple[int, int] = (1, 1),
                 level: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        for p in net.parameters():  # inference only; a TorchScript copy of trainable weights is not a leaf
            p.requires_grad_(False)
        self.net = net
        self.pre, self.post = tuple(pre), tuple(post)
        self.squeeze_channel = bool(squeeze_channel)
        self.steps = (max(1, int(steps[0])), max(1, int(steps[1])))
        self.min_sizes = (max(1, int(min_sizes[0])), max(1, int(min_sizes[1])))
        self.size_multiple = math.lcm(*self.steps)  # where livedenoise starts tiles
        self.level = (float(level[0]), max(float(level[1]), 1e-6))
        self._radius: int | None = None
        self._probing = False

    @property
    def whole_frames(self) -> bool:
        """True where a step takes statistics of the whole frame: tiles would each get their own."""
        return any(isinstance(s, ImageStatistic) for s in self.pre + self.post)

    def receptive_field_radius(self) -> int:
        """Measured once on inputs at ``level``, by perturbation (:func:`perturbation_receptive_field_radius`):
        ONNX Runtime has no gradients, and a foreign network's gradients can be NaN away from any path (a square
        root's infinite slope at zero times a zero upstream gradient, on a variance-stabilised input below the
        camera's offset) or zero where the network clips, which would hide or fake its reach."""
        if self._radius is None:
            probe = _AtLevel(self)
            self._probing = True  # no border padding while the reach is measured (it is what sizes the padding)
            try:
                self._radius = perturbation_receptive_field_radius(probe, block=probe.size_multiple)
            finally:
                self._probing = False
        return self._radius

    def frozen(self, x: torch.Tensor) -> ForeignNetwork:
        """This network with every statistic step fixed to its value on ``x`` (see :meth:`ImageStatistic.as_affine`)."""
        def freeze(steps: tuple[Step, ...]) -> tuple[Step, ...]:
            return tuple(s.as_affine(x) if isinstance(s, ImageStatistic) else s for s in steps)

        copy = ForeignNetwork(self.net, freeze(self.pre), freeze(self.post), squeeze_channel=self.squeeze_channel,
                              steps=self.steps, min_sizes=self.min_sizes, level=self.level)
        copy._probing = True  # it only serves the probe, which runs without border padding
        return copy

    def _allowed(self, n: int, axis: int) -> int:
        """The smallest size >= n the description allows on ``axis`` (0: y, 1: x): minimum + k * step."""
        least, step = self.min_sizes[axis], self.steps[axis]
        return least + -(-max(0, n - least) // step) * step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mirrored by the receptive-field radius (on the size grid) on every side, then to the next size allowed
        (at the bottom and right): a pixel near a frame's edge then sees the same mirrored values whether the frame
        runs whole or in tiles of any size, so tiles equal the whole frame, borders included."""
        h, w = x.shape[-2:]
        # on the size grid, so that every pixel keeps its place on the network's pooling grid
        r = 0 if self._probing else -(-self.receptive_field_radius() // self.size_multiple) * self.size_multiple
        ph, pw = self._allowed(h + 2 * r, 0) - h - 2 * r, self._allowed(w + 2 * r, 1) - w - 2 * r
        raw = x
        x = apply_steps(x, self.pre, raw)
        x = _mirror(x, (r, r + pw, r, r + ph))
        y = self.net(x[:, 0] if self.squeeze_channel else x)
        if self.squeeze_channel:
            y = y[:, None]
        return apply_steps(y[..., r:r + h, r:r + w].float(), self.post, raw)


def _mirror(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """``x`` padded by ``pad`` (left, right, top, bottom) with mirrored values, as livedenoise's own networks pad;
    edge values for what a mirror cannot reach (a frame smaller than its padding)."""
    if not any(pad):
        return x
    h, w = x.shape[-2:]
    if max(pad[0], pad[1]) < w and max(pad[2], pad[3]) < h:
        return nn.functional.pad(x, pad, mode="reflect")
    return nn.functional.pad(x, pad, mode="replicate")


class OnnxNetwork(nn.Module):
    """An ONNX model run by ONNX Runtime on the CPU, one sample per call (many packages fix the batch at 1).

    Why not converted to PyTorch: ONNX Runtime is what the Model Zoo's own tools run ONNX weights with, and it is
    already a livedenoise dependency (exports are checked with it). It has no gradients, so its receptive field is
    measured by perturbation (:func:`perturbation_receptive_field_radius`).
    """

    def __init__(self, model_bytes: bytes, where: str) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are about graph optimisations
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            raise CheckpointError(f"{where}: its ONNX weights could not be loaded by ONNX Runtime: "
                                  f"{str(exc).strip().splitlines()[0][:300]}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_dtype = "float16" if "float16" in first.type else "float32"
        if "float" not in first.type:
            raise CheckpointError(f"{where}: its ONNX input is {first.type}; livedenoise runs models on float values.")

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxNetwork:
        """A copy sharing the session (an ONNX Runtime session cannot be copied; its ``run`` is thread-safe)."""
        other = OnnxNetwork.__new__(OnnxNetwork)
        nn.Module.__init__(other)
        other.session, other.input_name, other.input_dtype = self.session, self.input_name, self.input_dtype
        other.train(self.training)
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        data = x.detach().cpu().numpy().astype(self.input_dtype)
        outs = [self.session.run(None, {self.input_name: data[i:i + 1]})[0] for i in range(data.shape[0])]
        return torch.from_numpy(np.concatenate(outs).astype(np.float32)).to(x.device)


def perturbation_receptive_field_radius(model: nn.Module, *, block: int = 1, start_size: int = 64,
                                        max_size: int = 1024, seed: int = 0) -> int:
    """Receptive-field radius of a network without gradients: the smallest ``d`` such that changing every input
    pixel farther than ``d`` from a central block of ``block`` x ``block`` outputs leaves that block unchanged.

    Binary search over ``d`` (changing more pixels can only change more outputs), on an image that doubles
    until its border lies beyond the reach. "Unchanged" allows 1e-5 of the outputs' spread: the same network
    on the same local values may round differently in another run. Inputs are noise in [0, 1) (``model`` maps them
    to where the network works, as :class:`_AtLevel` does).
    """
    gen = torch.Generator().manual_seed(seed)
    size = max(start_size, 4 * block)
    while True:
        size = int(math.ceil(size / block) * block)
        probe = _Perturbation(model, size, block, gen)
        far = probe.c0 - 1  # the farthest distance whose ring lies inside the image on every side
        if probe.reaches(far) and size < max_size:
            size *= 2
            continue
        if probe.reaches(far):  # at the largest image: its reach is at least the image's
            return far + 1
        lo, hi = 0, far
        while lo < hi:
            mid = (lo + hi) // 2
            if probe.reaches(mid):
                lo = mid + 1
            else:
                hi = mid
        return lo


class _Perturbation:
    """One probe image of :func:`perturbation_receptive_field_radius` and its central block's unchanged output."""

    def __init__(self, model: nn.Module, size: int, block: int, gen: torch.Generator) -> None:
        self.model, self.size, self.block = model, size, block
        self.x = torch.rand((1, 1, size, size), generator=gen)
        self.other = torch.rand((1, 1, size, size), generator=gen)
        self.c0 = (size // 2 // block) * block
        with torch.no_grad():
            out = model(self.x)
        self.base = self._block(out)
        self.tolerance = 1e-5 * max(float(out.std()), 1e-12)

    def _block(self, out: torch.Tensor) -> torch.Tensor:
        return out[..., self.c0:self.c0 + self.block, self.c0:self.c0 + self.block]

    def reaches(self, d: int) -> bool:
        """Whether changing the pixels farther than ``d`` from the block changes it."""
        changed = self.other.clone()
        lo, hi = max(0, self.c0 - d), min(self.size, self.c0 + self.block + d)
        changed[..., lo:hi, lo:hi] = self.x[..., lo:hi, lo:hi]
        with torch.no_grad():
            out = self._block(self.model(changed))
        return float((out - self.base).abs().max()) > self.tolerance


class _AtLevel(nn.Module):
    """A foreign network fed ``level`` +- spread for probe inputs in [0, 1) (what the measurement draws)."""

    def __init__(self, model: ForeignNetwork) -> None:
        super().__init__()
        self.model = model
        self.size_multiple = max(model.size_multiple, 1)
        self._frozen: ForeignNetwork | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid, spread = self.model.level
        v = mid + spread * (2.0 * x - 1.0)
        if not self.model.whole_frames:
            return self.model(v)
        if self._frozen is None:  # statistics of the first probe image, the same for every later one
            self._frozen = self.model.frozen(v)
        return self._frozen(v)


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


def _percentile(kw: Any, name: str, default: float, where: str, kind: str) -> float:
    value = getattr(kw, name, None)
    value = default if value is None else float(value)
    if not 0.0 <= value <= 100.0:
        raise CheckpointError(f"{where}: its {kind} {name} is {value}; expected a percentile from 0 to 100.")
    return value


def _statistic_axes(kw: Any, where: str, kind: str, sid: str, input_id: str) -> None:
    """Refuse statistics that are not the input frame's: over part of a frame (a row at a time), of another tensor,
    or of the output itself (bioimageio.core computes every statistic from the input before the network runs, so
    the Model Zoo's own runner cannot run those either). The batch axis is allowed: here one frame is one sample."""
    axes = getattr(kw, "axes", None)
    if axes is not None and not {"x", "y"} <= {str(a) for a in axes}:
        raise CheckpointError(f"{where}: its {kind} {sid} takes statistics over axes {', '.join(map(str, axes))}; "
                              "livedenoise computes them over each whole frame (y and x).")
    ref = getattr(kw, "reference_tensor", None)
    of = str(ref) if ref is not None else (input_id if kind == "preprocessing" else "the output")
    if of != input_id:
        raise CheckpointError(f"{where}: its {kind} {sid} takes statistics of {of!r}; livedenoise (like the Model "
                              "Zoo's bioimageio.core) takes statistics of the input image only.")


def _plan_steps(steps: Any, where: str, kind: str, input_id: str) -> tuple[Step, ...]:
    """A tensor's pre- or post-processing as steps: runs of fixed steps folded into one :class:`Affine`, each
    frame's statistics as an :class:`ImageStatistic`; one sentence for anything else."""
    out: list[Step] = []
    scale, shift, low, high = 1.0, 0.0, float("-inf"), float("inf")

    def flush() -> None:
        nonlocal scale, shift, low, high
        affine = Affine(scale, shift, low, high)
        if not affine.is_identity:
            out.append(affine)
        scale, shift, low, high = 1.0, 0.0, float("-inf"), float("inf")

    for step in steps or []:
        sid = str(getattr(step, "id", ""))
        kw: Any = getattr(step, "kwargs", None)
        if sid == "fixed_zero_mean_unit_variance":
            mean, std = _number(kw.mean, "mean", where), _number(kw.std, "std", where)
            if std <= 0:
                raise CheckpointError(f"{where}: its {kind} fixed_zero_mean_unit_variance has std {std}; expected > 0.")
            scale, shift = scale / std, (shift - mean) / std
            low, high = (low - mean) / std, (high - mean) / std
        elif sid == "scale_linear":
            gain, offset = _number(kw.gain, "gain", where), _number(kw.offset, "offset", where)
            scale, shift = scale * gain, shift * gain + offset
            low, high = sorted((low * gain + offset, high * gain + offset)) if gain else (offset, offset)
        elif sid == "clip" and (getattr(kw, "min_percentile", None) is not None
                                or getattr(kw, "max_percentile", None) is not None):
            _statistic_axes(kw, where, kind, sid, input_id)
            flush()
            out.append(ImageStatistic(
                "clip", _percentile(kw, "min_percentile", 0.0, where, kind),
                _percentile(kw, "max_percentile", 100.0, where, kind),
                low=None if getattr(kw, "min", None) is None else float(kw.min),
                high=None if getattr(kw, "max", None) is None else float(kw.max)))
        elif sid == "clip":
            lo = float(kw.min) if getattr(kw, "min", None) is not None else float("-inf")
            hi = float(kw.max) if getattr(kw, "max", None) is not None else float("inf")
            low, high = min(max(low, lo), hi), max(min(high, hi), lo)  # disjoint ranges end at the later clip's
        elif sid == "ensure_dtype":
            if not str(getattr(kw, "dtype", "float32")).startswith("float"):
                raise CheckpointError(f"{where}: its {kind} casts to {kw.dtype}; livedenoise runs models on float "
                                      "values.")
            continue  # float tensors throughout
        elif sid in ("zero_mean_unit_variance", "scale_range"):
            _statistic_axes(kw, where, kind, sid, input_id)
            flush()
            eps = float(getattr(kw, "eps", 1e-6) or 1e-6)
            if sid == "zero_mean_unit_variance":
                out.append(ImageStatistic(sid, eps=eps))
            else:
                lower = _percentile(kw, "min_percentile", 0.0, where, kind)
                upper = _percentile(kw, "max_percentile", 100.0, where, kind)
                if lower >= upper:
                    raise CheckpointError(f"{where}: its {kind} scale_range has min_percentile {lower} >= "
                                          f"max_percentile {upper}.")
                out.append(ImageStatistic(sid, lower, upper, eps=eps))
        elif sid == "scale_mean_variance":
            raise CheckpointError(f"{where}: its {kind} step 'scale_mean_variance' matches another tensor's "
                                  "statistics, which livedenoise does not run; supported steps: "
                                  f"{', '.join(FIXED_STEPS + IMAGE_STATISTIC_STEPS)}.")
        else:
            raise CheckpointError(f"{where}: its {kind} step {sid!r} is not supported; supported steps: "
                                  f"{', '.join(FIXED_STEPS + IMAGE_STATISTIC_STEPS)}.")
    flush()
    return tuple(out)


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
    library's architecture, else ONNX (ONNX Runtime, CPU)."""
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
    onnx = getattr(weights, "onnx", None)
    if onnx is not None:
        return OnnxNetwork(_read_member(package, _file_name(onnx.source)), str(package)), "onnx"
    present = [k for k in ("tensorflow_saved_model_bundle", "keras_hdf5", "tensorflow_js")
               if getattr(weights, k, None) is not None]
    raise CheckpointError(f"{package}: it has {', '.join(present) or 'no'} weights; livedenoise runs TorchScript, "
                          "PyTorch state-dict or ONNX weights.")


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
    pre = _plan_steps(getattr(inp, "preprocessing", None), str(package), "preprocessing", str(inp.id))
    post = _plan_steps(getattr(out, "postprocessing", None), str(package), "postprocessing", str(inp.id))
    net, kind = _network(descr, package)
    model = ForeignNetwork(net.eval(), pre, post, squeeze_channel=not has_channel, steps=step, min_sizes=least,
                           level=_test_level(descr, package))
    identity = Normalizer(offset=0.0, gain=1.0, vst=False, scale=1.0)
    meta = {"foreign": {"package": str(package), "name": str(descr.name), "weights": kind,
                        "preprocessing": [str(s.id) for s in (getattr(inp, "preprocessing", None) or [])],
                        "postprocessing": [str(s.id) for s in (getattr(out, "postprocessing", None) or [])],
                        "whole_frames": model.whole_frames}}
    return Checkpoint(model, FOREIGN_ARCH, {}, identity, metadata=meta, path=None, name=str(descr.name))


def refuse_training(ckpt: Checkpoint, what: str) -> None:
    """One sentence instead of a fine-tune of a foreign Model Zoo model (it has no noise model or livedenoise
    architecture to adapt and save)."""
    if ckpt.arch == FOREIGN_ARCH:
        raise CheckpointError(f"{ckpt.name!r} is a BioImage Model Zoo model run as it is; {what} needs a livedenoise "
                              f"backbone ({', '.join(repr(name) for name in SHIPPED)} or a .safetensors checkpoint).")


__all__ = ["FOREIGN_ARCH", "Affine", "ForeignNetwork", "ImageStatistic", "OnnxNetwork", "is_foreign_package",
           "load_foreign_bioimageio", "perturbation_receptive_field_radius", "refuse_training"]
