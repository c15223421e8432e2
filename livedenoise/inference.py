"""Apply a trained network to frames: the :class:`Denoiser`.

What it guarantees, and why:

- **Same preprocessing as training**: the checkpoint's :class:`~livedenoise.normalization.Normalizer`
  maps ADU to network units and back; outputs are float32 in the input units.
- **No seams, no out-of-memory**: frames above a pixel budget (or larger than an explicit
  ``tile_size``) are cut into tiles that overlap by at least the network's receptive-field
  radius; only each tile's centre is kept, and tiles start on the network's alignment grid, so
  for our tile-safe networks the tiled result equals the whole-frame result to float rounding.
  On CUDA an out-of-memory error halves the tiles and retries.
- **Fast enough for live use**: tiles and frames are batched, ``torch.inference_mode``,
  float16 autocast on CUDA (``precision="auto"``), fp32 on the CPU, torch threads capped at the
  cores actually available.
- **Hot swap**: :meth:`Denoiser.swap` prepares the new network on the device first, then
  replaces it under a lock; the next call uses it and no call is ever paused for the copy. The
  Denoiser works on its own copy of the weights, so a fine-tuner may keep training the model it
  handed over.
- **Temporal networks**: :meth:`Denoiser.push` keeps the last ``T`` live frames and returns the
  denoised newest one; :meth:`Denoiser.denoise_stack` gives every frame context on both sides. A
  CNNT network sees a centred window of ``T`` frames. The temporal backbone
  (:class:`~livedenoise.models.temporal.TemporalUNet`: a 2-D U-Net per frame, then a motion-adaptive
  fusion) runs its 2-D stage once per frame -- live, the last frames' results are kept, so a frame
  costs one 2-D pass plus the fusion -- and fuses each frame with ``T - 1`` neighbours, older ones
  live and both sides in a stack.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from itertools import takewhile
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from livedenoise.checkpoint import Checkpoint
from livedenoise.compiled import CompiledNetworks
from livedenoise.config import PRECISIONS
from livedenoise.cpu_memory import keep_freed_memory
from livedenoise.device import configure_cpu_threads, hint_bf16, select_device
from livedenoise.errors import ConfigError, LivedenoiseError
from livedenoise.models import (
    TemporalUNet,
    UNet2D,
    activation_bytes_per_pixel,
    is_tile_safe,
    model_is_temporal,
    receptive_field_radius,
    size_multiple,
)
from livedenoise.models.temporal import Fused, MotionAdaptiveFusion
from livedenoise.modelspec import load_model_spec
from livedenoise.normalization import Normalizer, check_image
from livedenoise.one_pass import Neighbour, lag_trust, neighbour_from_result, one_pass
from livedenoise.second_pass import second_pass

log = logging.getLogger("livedenoise")

#: Frames with more pixels than this (per model call, times T for temporal nets) are tiled on a GPU; CUDA
#: starts large and halves tiles on out-of-memory. On the CPU the budget follows from
#: ``CPU_ACTIVATION_BYTES`` and the model's working memory per pixel.
DEFAULT_PIXEL_BUDGET = {"cuda": 4096 * 4096, "mps": 2048 * 2048}
#: Working memory one CPU network call may use: 2 GiB runs a 2048² frame whole with the fast backbone
#: (~1.4 GB measured) and 2.2 Mpx with the standard one. Why not smaller tiles for the cache: each tile
#: recomputes a margin of the receptive-field radius (64 px) on every side, which costs more than the
#: cache saves (``benchmarks/results/2026-12-03-speed-tiles``: 2048² frames 20-30 % faster whole or in
#: strips than in 1024² tiles on the 2-core development CPU).
CPU_ACTIVATION_BYTES = 2 * 1024**3
#: Largest tile side chosen automatically.
MAX_AUTO_TILE = {"cpu": 8192, "cuda": 4096, "mps": 2048}
DEFAULT_WINDOW = 5
#: Live frames' 2-D results shared between the streams that push them (display, recorder): at most this many
#: bytes and frames (a 512² frame's result and spectrum take 2 MiB, a 2048² frame's 33 MiB: 32 and 7 frames).
SHARED_RESULTS_BYTES = 256 * 1024**2
SHARED_RESULTS_MAX = 32
#: Live outputs of the temporal second pass shared the same way, by the window of frames they came from: the
#: recorder, when its window holds the frames the display's held, reuses the display's output (a second pass
#: costs a 2-D pass). At most this many bytes and windows.
SHARED_OUTPUTS_BYTES = 128 * 1024**2
SHARED_OUTPUTS_MAX = 32
#: Self-ensemble sizes: 1 (off), 2 (identity + horizontal flip), 4 (the rotations), 8 (rotations x flip).
ENSEMBLES = (1, 2, 4, 8)
#: A compiled Denoiser's swap compiles the new network for at most this many of the latest input shapes.
MAX_PRECOMPILED_SHAPES = 4
#: A compiled Denoiser keeps the engines of its latest sources, so that swapping back to one does not compile again.
RECENT_ENGINES = 3

ModelSource = Any  # Checkpoint | str | os.PathLike | nn.Module | tuple[nn.Module, Normalizer]


def canonical_precision(precision: str) -> str:
    """``precision`` as one of :data:`PRECISIONS` (``float32``, ``bfloat16``, ``half``... accepted), else a
    ConfigError."""
    p = str(precision).lower()
    p = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}.get(p, p)
    if p not in PRECISIONS:
        raise ConfigError(f"Precision {precision!r} is unknown; expected one of {', '.join(PRECISIONS)}.")
    return p


def effective_precision(precision: str, device_type: str) -> str:
    """What ``precision`` runs as on a device of ``device_type``: ``auto`` is fp16 on CUDA, fp32 elsewhere."""
    p = canonical_precision(precision)
    if p == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    return p


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class _Engine:
    """Everything one model needs at inference time, swapped as a unit."""

    model: nn.Module
    normalizer: Normalizer
    name: str
    temporal: bool
    radius: int
    multiple: int
    margin: int
    tile_safe: bool
    window: int
    #: TemporalUNet: ``model`` is its 2-D stage, this fuses the results over time
    fusion: MotionAdaptiveFusion | None = None
    full: nn.Module | None = None  #: TemporalUNet: the whole network (what ``Denoiser.model`` returns)
    channels_last: bool = False  #: ``model`` (a 2-D net) runs on NHWC tensors
    pixel_budget: int = 0  #: input pixels (times T) per network call before tiling (set by Denoiser._prepare)
    #: the model takes statistics of each whole frame (a foreign package's ``scale_range``...): never tiled
    whole_frames: bool = False
    #: TemporalUNet: denoise the motion-compensated average of the raw frames too (:mod:`livedenoise.second_pass`)
    second_pass: bool = False
    #: TemporalUNet: the 2-D network of that second pass where it is not ``model`` (a fine-tuned model keeps the
    #: backbone's there: ``TemporalUNet.averages``), prepared as ``model`` is, and how its outputs are inverted
    averages: nn.Module | None = None
    averages_inversion: str | None = None
    #: the networks' compiled forms (a compiled Denoiser; :mod:`livedenoise.compiled`), freed with the engine and
    #: shared by its copies (``replace(engine, model=engine.averages)``)
    compiled: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _AxisPlan:
    count: int  # tiles along the axis
    core: int  # pixels kept per tile
    tile: int  # pixels fed to the network per tile (core + 2 * margin)


def _axis_plan(n: int, max_tile: int, margin: int, multiple: int) -> _AxisPlan:
    """Fewest equal tiles covering ``n`` pixels whose network input, with a margin on both sides, is at most
    ``max_tile`` (explicit ``tile_size`` and the out-of-memory retry: a bound that holds for every tile)."""
    max_core = max(multiple, ((max_tile - 2 * margin) // multiple) * multiple)
    count = max(1, math.ceil(n / max_core))
    core = _round_up(math.ceil(n / count), multiple)
    return _AxisPlan(count, core, core + 2 * margin)


def _axis_split(n: int, count: int, margin: int, multiple: int) -> _AxisPlan:
    """``count`` equal tiles covering ``n`` pixels; ``tile`` is the largest network input among them (tiles at the
    frame's edge take no margin on that side: one tile is the whole axis, two tiles one margin each)."""
    core = _round_up(math.ceil(n / count), multiple)
    tile = n if count == 1 else min(n, core + margin * min(count - 1, 2))
    return _AxisPlan(count, core, tile)


def _fit_axis(n: int, max_tile: int, margin: int, multiple: int) -> _AxisPlan | None:
    """The fewest tiles along an axis of ``n`` pixels whose inputs are at most ``max_tile``, or None."""
    for count in range(1, max(1, math.ceil(n / multiple)) + 1):
        split = _axis_split(n, count, margin, multiple)
        if split.tile <= max_tile:
            return split
        if split.core <= multiple:
            break
    return None


def _tile_plan(h: int, w: int, budget: int, max_side: int, margin: int, multiple: int) -> tuple[_AxisPlan, _AxisPlan]:
    """Tiles of at most ``budget`` input pixels (and ``max_side`` per side) covering an ``h`` x ``w`` frame,
    chosen to feed the network the fewest pixels in all.

    Why rectangles: every tile recomputes a margin on each inner side, so the cheapest cover uses few, large
    tiles, which for a wide frame are full-width strips rather than squares (a 2048² frame under a
    2.2 Mpx budget: two strips of 2048 x 1088, 4.5 Mpx in all, instead of four 1088² squares, 4.7 Mpx).
    """
    best: tuple[int, _AxisPlan, _AxisPlan] | None = None
    for cx in range(1, max(1, math.ceil(w / multiple)) + 1):
        px = _axis_split(w, cx, margin, multiple)
        if px.tile > max_side:
            continue
        py = _fit_axis(h, min(max_side, budget // px.tile), margin, multiple)
        if py is not None:
            cost = (w + 2 * margin * (cx - 1)) * (h + 2 * margin * (py.count - 1))
            if best is None or cost < best[0]:
                best = (cost, py, px)
        if px.core <= multiple:
            break
    if best is None:  # not even the narrowest tiles fit: the smallest square tiles
        side = 2 * margin + 4 * multiple
        return _axis_plan(h, side, margin, multiple), _axis_plan(w, side, margin, multiple)
    return best[1], best[2]


def _is_oom(exc: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    return isinstance(exc, oom_types) or "out of memory" in str(exc).lower()


@dataclass
class _Stream:
    """What :meth:`Denoiser.push` keeps for one stream, tied to the engine that filled it (after a swap a stream
    restarts, so no window ever mixes models): its window of the last frames, and the window entries of frames given
    as ``following`` until their own turn (a stream's later frames are each in the windows of the frames before
    them, and their 2-D pass runs once)."""

    engine: _Engine
    frames: deque[Any]
    ahead: OrderedDict[bytes, tuple] = field(default_factory=OrderedDict)
    #: what the stream keeps of the frames it denoised in one pass (``push(..., one_pass=True)``), oldest first, and
    #: the engine's fusion trust per lag as numbers (read once, not once per frame)
    past: deque[Neighbour] = field(default_factory=deque)
    trust: list[float] | None = None
    #: the way the stream's last frame was pushed (True: one pass), None before its first: a stream that changes
    #: way (an adaptive display, :mod:`livedenoise.acquisition.pass_choice`) carries its window over
    one_pass: bool | None = None


def _frame_key(frame: np.ndarray) -> bytes:
    """A frame's identity by content: a 16-byte BLAKE2 digest of its pixels (about 1 ms per 512² frame), its
    dtype and shape."""
    return (hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=16).digest()
            + f"{frame.dtype.str}{frame.shape}".encode())


def _result_bytes(d: torch.Tensor, spectrum: torch.Tensor | None) -> int:
    """Memory of a frame's 2-D result and its registration spectrum (the shared live results' bound)."""
    return d.numel() * d.element_size() + (0 if spectrum is None else spectrum.numel() * spectrum.element_size())


class Denoiser:
    """Denoise frames with a trained network.

    ``model_or_checkpoint``: a shipped backbone's name (``"fast"``, ``"standard"``, ``"lite"``, ``"temporal"``,
    ``"temporal-standard"``, ``"temporal-lite"``), a
    :class:`~livedenoise.checkpoint.Checkpoint`, a path to a
    ``.safetensors`` checkpoint, a ``(model, normalizer)`` tuple, or a model (then
    ``normalizer`` is required). ``normalizer`` overrides the checkpoint's when given.
    ``device``: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``, ``"mps"`` (see
    :func:`~livedenoise.device.select_device`). ``tile_size``: side of the network input per tile
    (``None``: tile only frames above ``pixel_budget``, input pixels per network call; by default, on the
    CPU, what fits ``CPU_ACTIVATION_BYTES`` of working memory for this model). ``overlap``: context margin per tile side
    in pixels (``None``: the receptive-field radius; rounded up to the alignment grid; smaller
    values are allowed with a warning). ``precision``: ``"auto"`` (fp16 on CUDA, fp32 elsewhere),
    ``"fp32"``, ``"fp16"``, ``"bf16"``. ``window``: frames per temporal window (``None``: the
    checkpoint's ``training["window"]``, else 5). ``threads``: torch CPU threads (``None``: capped
    at the available cores; process-wide). ``ensemble``: average the network's outputs over this many
    flips/90-degree rotations of the input (1, 2, 4 or 8; in network units, before the inverse
    transform). The noise is not equivariant but the structures are, so the average removes part of
    the network's own error: +0.2 dB mean PSNR on the dev pairs at 8x the cost, worth it for batch
    jobs, not for live display (see ``benchmarks/bench_backbone.py --ensemble``). ``channels_last``: run
    2-D networks in the channels-last (NHWC) memory layout, which oneDNN's convolutions are fastest in:
    1.8x faster for the fast backbone at 512² on the 2-core development CPU, outputs equal to the NCHW
    reference within 1e-3 of the range (tested; ``benchmarks/bench_speed.py`` measures both layouts).
    ``second_pass``: with the temporal backbone, also denoise the motion-compensated average of the raw
    frames where they agree, a frame with as many times the light (:mod:`livedenoise.second_pass`); it
    costs a second 2-D pass per frame. ``False`` keeps the fusion of the 2-D results alone.
    ``compiled``: run the network through ``torch.compile`` (:mod:`livedenoise.compiled`): each new input shape
    costs seconds of compilation once, then passes are faster where much of the time is not convolutions (bf16 on a
    CPU with AMX); in fp32 outputs equal the uncompiled network's (within 1e-3 of the range, tested), in bf16 within
    1e-2 (measured). Without a C++ compiler
    it runs uncompiled, with one warning.
    """

    def __init__(
        self,
        model_or_checkpoint: ModelSource,
        normalizer: Normalizer | None = None,
        *,
        device: str | torch.device = "auto",
        tile_size: int | None = None,
        overlap: int | None = None,
        batch_size: int = 4,
        precision: str = "auto",
        window: int | None = None,
        pixel_budget: int | None = None,
        threads: int | None = None,
        ensemble: int = 1,
        channels_last: bool = True,
        second_pass: bool = True,
        compiled: bool = False,
    ) -> None:
        if ensemble not in ENSEMBLES:
            raise ConfigError(f"ensemble {ensemble!r} is invalid; expected one of {', '.join(map(str, ENSEMBLES))}.")
        self._ensemble = int(ensemble)
        self._channels_last = bool(channels_last)
        self._second_pass = bool(second_pass)
        self._networks = CompiledNetworks(compiled)
        self._shapes_run: OrderedDict[tuple[int, ...], None] = OrderedDict()  # input shapes run (compiled only)
        self._recent: OrderedDict[tuple[int, int, int], tuple] = OrderedDict()  # compiled only: see _recent_engine
        self._device = select_device(device)
        if self._device.type == "cpu":
            configure_cpu_threads(threads)
            keep_freed_memory()  # activations reuse freed memory instead of faulting in fresh pages every frame
        if batch_size < 1:
            raise ConfigError(f"batch_size {batch_size} is invalid; expected a positive integer.")
        if tile_size is not None and tile_size < 1:
            raise ConfigError(f"tile_size {tile_size} is invalid; expected a positive number of pixels or None.")
        if overlap is not None and overlap < 0:
            raise ConfigError(f"overlap {overlap} is invalid; expected a non-negative number of pixels or None.")
        if window is not None and window < 1:
            raise ConfigError(f"window {window} is invalid; expected a positive number of frames.")
        self._precision = self._resolve_precision(precision)
        self._tile_size = tile_size
        self._overlap = overlap
        self._batch_size = int(batch_size)
        self._window_arg = window
        kind = self._device.type if self._device.type in MAX_AUTO_TILE else "cpu"
        self._pixel_budget_arg = int(pixel_budget) if pixel_budget else None
        self._kind = kind
        self._max_auto_tile = MAX_AUTO_TILE[kind]
        self._oom_tile: int | None = None  # tile side forced after a CUDA out-of-memory error
        self._lock = threading.Lock()
        self._dark_level_checked: int | None = None  # id of the engine whose first frame _check_dark_level saw
        self._window_lock = threading.Lock()
        self._engine = self._prepare(model_or_checkpoint, normalizer)
        if compiled:
            self._remember(model_or_checkpoint, normalizer, self._engine)
        #: Live windows, one per stream (the display and the recorder each push their own sequence of frames),
        #: each tied to the engine that filled it: after a swap a stream restarts, so no window ever mixes models.
        self._streams: dict[str, _Stream] = {}
        #: The 2-D stage's results of the last frames pushed, by content: the display and the recorder push the
        #: same frames on their own streams, and a frame's 2-D pass then runs once for both (fused models only).
        self._shared: OrderedDict[bytes, tuple[_Engine, torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self._shared_bytes = 0
        #: pushes that reused another stream's 2-D result (see :meth:`_frame_result`)
        self.shared_hits = 0
        #: second-pass outputs by the digests of their window's frames and the index of the one denoised, and pushes
        #: that reused one
        self._outputs: OrderedDict[tuple[tuple[bytes, ...], int], tuple[_Engine, np.ndarray]] = OrderedDict()
        self.shared_output_hits = 0
        log.info(
            "Denoiser ready: model %r (%s, receptive field %d px, tile margin %d px) on %s, precision %s%s, "
            "up to %.1f Mpx per network call",
            self._engine.name, "2D+T" if self._engine.temporal else "2D", self._engine.radius,
            self._engine.margin, self._device, self.precision,
            ", compiled (each new input shape compiles once)" if compiled else "", self._engine.pixel_budget / 1e6,
        )
        if self._device.type == "cpu" and self.precision == "fp32":
            hint_bf16()

    # ------------------------------------------------------------------ configuration
    def _resolve_precision(self, precision: str) -> torch.dtype | None:
        p = effective_precision(precision, self._device.type)
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[p]

    def _prepare(self, source: ModelSource, normalizer: Normalizer | None) -> _Engine:
        """Build an engine on the device; called *outside* the lock (this is the slow part)."""
        name = "model"
        window = self._window_arg
        if isinstance(source, (str, os.PathLike)):
            # a shipped name ('fast', 'temporal') or a file; another tool's Model Zoo package runs as it is
            source = load_model_spec(source, device="cpu", foreign=True)
        if isinstance(source, Checkpoint):
            model, norm, name = source.model, source.normalizer, source.name
            if window is None:
                window = (source.metadata.get("training") or {}).get("window")
        elif isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], nn.Module):
            model, norm = source
        elif isinstance(source, nn.Module):
            model, norm = source, None
        else:
            raise ConfigError(
                f"Cannot denoise with a {type(source).__name__}; expected a Checkpoint, a checkpoint path, "
                "or a torch model with a Normalizer."
            )
        if normalizer is not None:
            from livedenoise.bioimageio_import import ForeignNetwork

            if isinstance(model, ForeignNetwork):
                raise ConfigError(f"Model {name!r} is a BioImage Model Zoo model of another tool: it runs on raw "
                                  "values with its own processing, so it takes no normalizer.")
            norm = normalizer
        if not isinstance(norm, Normalizer):
            raise ConfigError("A Normalizer is required with a bare model; pass Denoiser(model, normalizer).")
        if int(getattr(model, "in_channels", 1)) != 1:
            raise ConfigError(
                f"Model {name!r} takes {model.in_channels} input channels; the Denoiser handles single-channel frames."
            )
        # fp32 first: a model taken from another Denoiser may hold that one's bf16 weights (to_reduced_precision)
        work = copy.deepcopy(model).float().to(self._device).eval()
        for p in work.parameters():
            p.requires_grad_(False)
        temporal = model_is_temporal(work)
        fusion = getattr(work, "fusion", None) if temporal and hasattr(work, "denoise_frames") else None
        full = work
        averages: nn.Module | None = None
        averages_inversion: str | None = None
        if fusion is not None:
            fused_net = cast(TemporalUNet, work)  # a temporal net with a fusion and denoise_frames
            if self._window_arg is not None and int(self._window_arg) != int(fused_net.window):
                raise ConfigError(f"Model {name!r} fuses a fixed window of {fused_net.window} frames; window="
                                  f"{self._window_arg} is not possible with it (leave window unset).")
            window = int(fused_net.window)
            work = fused_net.frame  # every network pass is the 2-D stage; the fusion runs on its results
            averages, averages_inversion = fused_net.averages, fused_net.averages_inversion
        radius = receptive_field_radius(work)
        multiple = size_multiple(work)
        margin = _round_up(radius if self._overlap is None else self._overlap, multiple)
        if self._overlap is not None and self._overlap < radius:
            log.warning(
                "Tile overlap %d px is smaller than the receptive-field radius %d px of %r: tiles may show seams.",
                self._overlap, radius, name,
            )
        win = int(window) if window else DEFAULT_WINDOW
        # 2-D passes (a 2-D net, or a temporal net's 2-D stage) take NCHW tensors: the layout that pays off.
        nhwc = self._channels_last and (not temporal or fusion is not None)
        work = self._laid_out(work, nhwc)
        if averages is not None:
            averages = self._laid_out(averages, nhwc)
        if self._pixel_budget_arg is not None:
            budget = self._pixel_budget_arg
        elif self._kind == "cpu":
            budget = max(64 * 64, CPU_ACTIVATION_BYTES // activation_bytes_per_pixel(work))
        else:
            budget = DEFAULT_PIXEL_BUDGET[self._kind]
        whole = bool(getattr(work, "whole_frames", False))
        if whole:
            log.info("Model %r takes statistics of each whole frame: frames are run whole, never in tiles.", name)
            if self._tile_size is not None:
                log.warning("tile_size %d not used with %r: its processing takes statistics of each whole frame, "
                            "which tiles would change.", self._tile_size, name)
        return _Engine(work, norm, str(name), temporal, radius, multiple, margin, is_tile_safe(work),
                       win if temporal else 1, fusion, full, nhwc, budget, whole,
                       second_pass=fusion is not None and self._second_pass, averages=averages,
                       averages_inversion=averages_inversion)

    def _laid_out(self, net: nn.Module, nhwc: bool) -> nn.Module:
        """A 2-D network in the layout and precision its passes run in (it is modified in place)."""
        if nhwc:  # memory_format= is valid at runtime but missing from torch's stubs of Module.to
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self._reduced_weights(net):  # it has to_reduced_precision: a UNet2D
            # bf16 weights and activations: faster than autocast on a CPU
            cast(UNet2D, net).to_reduced_precision(torch.bfloat16)
        return net

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """Name of the checkpoint in use."""
        return self._engine.name

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def normalizer(self) -> Normalizer:
        return self._engine.normalizer

    @property
    def model(self) -> nn.Module:
        """The Denoiser's own (eval-mode, on-device) copy of the network (the whole temporal network, both stages)."""
        return self._engine.full if self._engine.full is not None else self._engine.model

    @property
    def is_temporal(self) -> bool:
        return self._engine.temporal

    @property
    def window(self) -> int:
        """Frames per temporal window (1 for 2-D networks)."""
        return self._engine.window

    @property
    def receptive_field_radius(self) -> int:
        return self._engine.radius

    @property
    def overlap(self) -> int:
        """Context margin per tile side actually used (pixels)."""
        return self._engine.margin

    @property
    def pixel_budget(self) -> int:
        """Input pixels (times the window for temporal nets) per network call above which frames are tiled."""
        return self._current().pixel_budget

    @property
    def layout(self) -> str:
        """Memory layout of the 2-D passes: ``"channels-last"`` (NHWC) or ``"NCHW"``."""
        return "channels-last" if self._current().channels_last else "NCHW"

    @property
    def compiled(self) -> bool:
        """True when passes are asked to run compiled (see :attr:`compile_failure` for whether they could)."""
        return self._networks.enabled

    @property
    def compile_failure(self) -> str | None:
        """Why ``torch.compile`` could not compile the network, once it tried and failed; else None."""
        return self._networks.failure

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self._precision]

    # ------------------------------------------------------------------ swap
    def swap(self, model_or_checkpoint: ModelSource, normalizer: Normalizer | None = None) -> None:
        """Replace the network; thread-safe, effective from the next call, never pauses one.

        A compiled Denoiser compiles the new network, in the caller's thread, for the input shapes the old one
        ran, before the swap: a live display's next frame then finds it ready instead of waiting seconds."""
        engine = self._recent_engine(model_or_checkpoint, normalizer)
        if engine is None:
            engine = self._prepare(model_or_checkpoint, normalizer)  # slow part, outside the lock
            if self._networks.enabled:
                self._precompile(engine)
                self._remember(model_or_checkpoint, normalizer, engine)
        with self._lock:
            old, self._engine = self._engine, engine
        with self._window_lock:  # the old model's shared 2-D results are of no further use: free them now
            self._shared.clear()
            self._shared_bytes = 0
            self._outputs.clear()
        log.info("Denoiser swapped model %r -> %r", old.name, engine.name)

    @staticmethod
    def _source_key(source: ModelSource, normalizer: Normalizer | None) -> tuple[int, int, int]:
        return id(source), id(normalizer), id(getattr(source, "normalizer", None))

    def _recent_engine(self, source: ModelSource, normalizer: Normalizer | None) -> _Engine | None:
        """A compiled Denoiser's engine for this very source (and normaliser), when it was prepared lately: the live
        viewer's compare toggle swaps back and forth between two checkpoints, each swap would compile again."""
        with self._lock:
            kept = self._recent.get(self._source_key(source, normalizer))
            if kept is not None:
                self._recent.move_to_end(self._source_key(source, normalizer))
            return kept[-1] if kept is not None else None

    def _remember(self, source: ModelSource, normalizer: Normalizer | None, engine: _Engine) -> None:
        with self._lock:  # the source and normaliser are held, so that their ids stay theirs while they are keys
            self._recent[self._source_key(source, normalizer)] = (source, normalizer,
                                                                  getattr(source, "normalizer", None), engine)
            while len(self._recent) > RECENT_ENGINES:
                self._recent.popitem(last=False)

    def _precompile(self, engine: _Engine) -> None:
        """Run ``engine``'s 2-D networks once on zeros of the latest input shapes the current engine has run (a
        windowed temporal network's 5-D passes are not: they compile at their first frame). A failure here only
        costs the time the precompilation would have saved: it is logged and the swap goes on."""
        with self._lock:
            shapes = list(self._shapes_run)
        for shape in shapes:
            x = torch.zeros(shape, device=self._device)
            for net in (engine.model, engine.averages):
                if net is None:
                    continue
                try:
                    self._call_model(replace(engine, model=net), x, None)
                except Exception as exc:
                    log.warning("could not compile %r for %s inputs before the swap (%s: %s); it compiles at its "
                                "first frame", engine.name, shape, exc.__class__.__name__, exc)

    def _current(self) -> _Engine:
        with self._lock:
            return self._engine

    #: Share of a frame's pixels below the noise model's dark level above which :meth:`denoise` warns.
    DARK_SHARE_WARNED = 0.5

    def _check_dark_level(self, engine: _Engine, frame: np.ndarray) -> None:
        """Warn when most of the first frame a model sees lies below its noise model's dark level: the model then sees
        a black frame and returns a flat one. Why: the Python API runs the model's stored noise model as it is (the
        CLI fits one to the data and checks the result), so data from another camera, or already offset-subtracted
        (``frame - 10000`` in an audit), came back flat without a word. Once per engine (a swap checks again), not per
        frame: a camera's levels do not change from frame to frame."""
        # the engine's id, not the engine: holding it would keep a swapped-out network alive
        if self._dark_level_checked == id(engine) or not isinstance(engine.normalizer, Normalizer):
            return
        self._dark_level_checked = id(engine)
        below = engine.normalizer.share_below_dark_level(frame)
        if below > self.DARK_SHARE_WARNED:
            log.warning("%.0f %% of the frame's pixels are below the noise model's dark level (offset %.4g ADU): "
                        "the network sees a black frame and the result is not a denoised image. Fit the noise model "
                        "to your data: livedenoise.denoise_array(image), `livedenoise denoise`, or Denoiser(model, "
                        "normalizer=livedenoise.noise_model.fit_noise_model(frames).normalizer).", 100 * below,
                        engine.normalizer.offset)

    # ------------------------------------------------------------------ public API
    def denoise(self, frame: np.ndarray) -> np.ndarray:
        """Denoise one 2-D frame (Y, X); returns float32 (Y, X) in the input units."""
        arr = check_image(frame, "frame", ndim=2)
        engine = self._current()
        self._check_dark_level(engine, arr)
        if engine.temporal and engine.fusion is None:
            return self._run_windows(engine, arr[None, None], np.zeros(1, dtype=np.int64))[0]
        return self._run_frames(engine, arr[None])[0]  # a fused temporal model alone: its 2-D stage

    def denoise_stack(self, stack: np.ndarray) -> np.ndarray:
        """Denoise an array whose last two axes are Y, X (any leading axes); float32, same shape.

        For temporal networks axis -3 is time and each frame is denoised with a window of
        ``window`` frames centred on it (shifted inwards at the ends of the series, so only real
        frames are used).
        """
        arr = check_image(stack, "stack", min_ndim=2)
        if arr.ndim == 2:
            return self.denoise(arr)
        engine = self._current()
        self._check_dark_level(engine, arr.reshape(-1, *arr.shape[-2:])[0])
        h, w = arr.shape[-2:]
        out = np.empty(arr.shape, dtype=np.float32)
        if not engine.temporal or engine.fusion is not None:
            flat, flat_out = arr.reshape(-1, h, w), out.reshape(-1, h, w)
            if engine.fusion is not None:
                series = arr.reshape(-1, arr.shape[-3], h, w)
                for s in range(series.shape[0]):
                    out.reshape(series.shape)[s] = self._fuse_series(engine, series[s])
                return out
            step = self._frames_per_call(engine, h, w)
            for i in range(0, flat.shape[0], step):
                flat_out[i:i + step] = self._run_frames(engine, flat[i:i + step])
            return out
        series = arr.reshape(-1, arr.shape[-3], h, w)
        series_out = out.reshape(series.shape)
        n_t = series.shape[1]
        win = min(engine.window, n_t)
        starts = np.clip(np.arange(n_t) - engine.window // 2, 0, n_t - win)
        step = self._frames_per_call(engine, h, w, win)
        for s in range(series.shape[0]):
            for i in range(0, n_t, step):
                ts = np.arange(i, min(i + step, n_t))
                windows = np.stack([series[s, starts[t]:starts[t] + win] for t in ts])
                series_out[s, ts] = self._run_windows(engine, windows, ts - starts[ts])
        return out

    def _fuse_series(self, engine: _Engine, series: np.ndarray) -> np.ndarray:
        """Fused temporal model on one series [T, H, W]: the 2-D stage on every frame once, then every frame
        fused with the frames within the window on both sides. Chunks of frames bound the memory: the 2-D
        results a chunk shares with the next (its halo of neighbours) are kept, not recomputed."""
        fusion = engine.fusion
        assert fusion is not None  # only called for engines with a fusion
        n_t = series.shape[0]
        lags = engine.window - 1
        out = np.empty(series.shape, dtype=np.float32)
        chunk = max(8, self._frames_per_call(engine, *series.shape[-2:]) * 4)
        kept, kept_from = None, 0  # 2-D results of frames kept_from .. kept_from + len(kept)
        for start in range(0, n_t, chunk):
            lo, hi = max(0, start - lags), min(n_t, start + chunk + lags)
            if kept is not None:
                kept = kept[lo - kept_from:]
            have = lo + (0 if kept is None else kept.shape[0])
            new = self._denoised_units(engine, series[have:hi]) if hi > have else None
            kept = new if kept is None else (kept if new is None else torch.cat([kept, new]))
            kept_from = lo
            stop = min(start + chunk, n_t)
            assert kept is not None  # the first chunk computes frames (hi > have = 0)
            raw = engine.normalizer.electrons_torch(self._to_device(series[lo:hi])) if engine.second_pass else None
            with torch.inference_mode():
                result = fusion.fuse_series(kept, causal=False, raw=raw).part(slice(start - lo, stop - lo))
            out[start:stop] = self._finish_fused(engine, result, series[start:stop])
        return out

    def _finish_fused(self, engine: _Engine, result: Fused, raw: np.ndarray) -> np.ndarray:
        """A fusion's frames [N, H, W] in ADU: with the second pass where the fusion averaged the raw frames, else
        the fused 2-D results; saturated pixels keep their raw values."""
        if result.average is None:  # the second pass not asked for
            return self._finish(engine, result.fused, raw)
        # the second pass's network: the 2-D stage, or the backbone's that a fine-tuned model keeps for it
        net = engine if engine.averages is None else replace(engine, model=engine.averages)
        with torch.inference_mode():
            out = second_pass(result, engine.normalizer, lambda z: self._units_pass(net, z),
                              engine.averages_inversion if engine.averages is not None else None)
        return self._keep_raw_values(engine, out.cpu().numpy().astype(np.float32, copy=False), raw)

    def _denoised_units(self, engine: _Engine, frames: np.ndarray) -> torch.Tensor:
        """The 2-D stage's output for frames [N, H, W] in network units, [N, H, W] (fused temporal models)."""
        return self._units_pass(engine, engine.normalizer.forward_torch(self._to_device(frames)))

    def _units_pass(self, engine: _Engine, z: torch.Tensor) -> torch.Tensor:
        """The 2-D network on inputs [N, H, W] already in network units, [N, H, W] (fused temporal models)."""
        step = self._frames_per_call(engine, *z.shape[-2:])
        return torch.cat([self._infer(engine, z[i:i + step, None], None)[:, 0].float()
                          for i in range(0, z.shape[0], step)])

    def push(self, frame: np.ndarray, stream: str = "live", *, second_pass: bool | None = None,
             following: Sequence[np.ndarray] = (), one_pass: bool = False) -> np.ndarray:
        """Add a live frame and return it denoised (temporal nets use the last ``window`` frames of ``stream``).

        Each ``stream`` keeps its own window, so two consumers of one acquisition (the display, which may
        skip frames, and a recorder that takes every frame) never mix their sequences. ``second_pass=False``
        skips the temporal second pass for this frame alone (a display that has fallen behind); ``None``: the
        Denoiser's setting. ``following``: frames acquired after this one, oldest first, which a consumer that
        lags the camera already has (a recorder): a temporal model then denoises the frame with a window centred on
        it, exactly as :meth:`denoise_stack` denoises a series, instead of the frames before it alone. They are not
        added to the stream (push each in its turn); their 2-D results are kept for then. Ignored by 2-D models.
        ``one_pass``: with the temporal backbone, denoise the frame in one 2-D pass, the motion-compensated average of
        it with the frames this stream denoised before it (:mod:`livedenoise.one_pass`: about the fusion alone's cost
        instead of two 2-D passes; ``second_pass`` does not apply). A causal window only: refused with ``following``.
        A stream may change way between frames (an adaptive display does): on a change to one pass, the two passes'
        window of the stream seeds what one pass averages (so its next frame is no 2-D frame, where the Denoiser runs
        the second pass and so kept the frames' raw values); on a change back, the two passes' window restarts from
        that frame (its first frames average fewer neighbours). A stream holds one way's frames at a time.
        """
        if one_pass and len(following):
            raise ConfigError("Denoiser.push: one_pass denoises a frame with the frames before it (a causal window); "
                              "it cannot take following frames.")
        arr = check_image(frame, "frame", ndim=2)
        ahead = [check_image(f, "following frame", ndim=2) for f in following]
        engine = self._current()
        if not engine.temporal:
            return self._run_frames(engine, arr[None])[0]
        if one_pass and engine.fusion is not None and engine.normalizer.vst:
            return self._push_one_pass(engine, arr, stream)
        kept = self._append(engine, arr, stream)
        # the frames of this series: up to the first of another shape (a new ROI or binning starts a new series)
        ahead = list(takewhile(lambda f: f.shape == arr.shape, ahead))[:engine.window - 1]
        if engine.fusion is None:
            frames = np.stack([f for (f,) in kept][-engine.window:] + ahead)
            # the window denoise_stack uses for this frame: centred, shifted inwards where the series ends
            ref = len(kept[-engine.window:]) - 1
            start = int(np.clip(ref - engine.window // 2, 0, max(frames.shape[0] - engine.window, 0)))
            windows = frames[start:start + engine.window]
            return self._run_windows(engine, windows[None], np.array([ref - start]))[0]
        # a fused temporal model: each frame's 2-D result is kept, so a live frame costs one 2-D pass + the fusion
        # (+ the second pass, which another stream whose window holds the same frames may already have run)
        entries = kept + self._ahead_entries(engine, stream, ahead)
        ref = len(kept) - 1
        outputs_key = (tuple(key for _, _, _, key in entries), ref)
        second = engine.second_pass and second_pass is not False
        if second:
            with self._window_lock:
                hit = self._outputs.get(outputs_key)
                if hit is not None and hit[0] is engine:
                    self.shared_output_hits += 1
                    return hit[1].copy()
        window = torch.stack([d for d, _, _, _ in entries])
        spectra = None if entries[-1][1] is None else torch.stack([sp for _, sp, _, _ in entries])
        raws = torch.stack([x for _, _, x, _ in entries]) if second else None
        with torch.inference_mode():
            result = engine.fusion.fuse(window[None], ref, None if spectra is None else spectra[None],
                                        None if raws is None else raws[None])
        out = self._finish_fused(engine, result, arr[None])[0]
        if second and engine is self._current():
            self._keep_output(engine, outputs_key, out)
        return out

    def _push_one_pass(self, engine: _Engine, arr: np.ndarray, stream: str) -> np.ndarray:
        """:meth:`push` with ``one_pass``: :func:`livedenoise.one_pass.one_pass` with the stream's past frames."""
        assert engine.fusion is not None  # fused temporal models only
        with self._window_lock:
            kept_by = self._stream(stream, engine)
            carried = list(kept_by.frames)[-engine.fusion.lags:] if kept_by.one_pass is False else None
            kept_by.frames.clear()  # one pass keeps its own history; a change back restarts this window anyway
            kept_by.one_pass = True
        if carried is not None:  # from two passes: their window's frames are the ones before this one
            seeded = [neighbour_from_result(d, electrons, engine.normalizer, engine.fusion)
                      for d, _, electrons, _ in carried if electrons is not None]
            with self._window_lock:
                kept_by.past.clear()
                kept_by.past.extend(seeded)
        with self._window_lock:
            kept_by = self._stream(stream, engine)
            past = kept_by.past
            if past and past[-1].electrons.shape != arr.shape:
                past.clear()  # new ROI / binning: old frames no longer line up
            window = list(past)
            if kept_by.trust is None:
                kept_by.trust = lag_trust(engine.fusion)
            trust = kept_by.trust
        averages = engine if engine.averages is None else replace(engine, model=engine.averages)
        with torch.inference_mode():
            out, kept = one_pass(self._to_device(arr), window, engine.normalizer, engine.fusion,
                                 lambda z: self._units_pass(engine, z), lambda z: self._units_pass(averages, z),
                                 engine.averages_inversion if engine.averages is not None else None, trust)
        with self._window_lock:
            past = self._stream(stream, engine).past
            past.append(kept)
            while len(past) > engine.fusion.lags:
                past.popleft()
        return self._keep_raw_values(engine, out.cpu().numpy().astype(np.float32, copy=False), arr)

    def _ahead_entries(self, engine: _Engine, stream: str, frames: list[np.ndarray]) -> list[tuple]:
        """Window entries of ``stream``'s following ``frames``, computed once per frame and kept for their turn (at
        most a window of them)."""
        entries = []
        for f in frames:
            key = _frame_key(f)
            with self._window_lock:
                ahead = self._stream(stream, engine).ahead
                entry = ahead.get(key)
            if entry is None:
                entry = self._entry(engine, f, key)
                with self._window_lock:
                    ahead[key] = entry
                    while len(ahead) > engine.window:
                        ahead.popitem(last=False)
            entries.append(entry)
        return entries

    def _entry(self, engine: _Engine, arr: np.ndarray, key: bytes | None = None) -> tuple:
        """A fused model's window entry of a frame: its 2-D result and spectrum (shared by content, see
        :meth:`_frame_result`), its raw values in electrons for the second pass (None without), and its key."""
        key = _frame_key(arr) if key is None else key
        d, spectrum = self._frame_result(engine, arr, key)
        # the raw frame in electrons (camera pattern out): the second pass averages it with moved neighbours
        electrons = engine.normalizer.electrons_torch(self._to_device(arr)) if engine.second_pass else None
        return d, spectrum, electrons, key

    def _append(self, engine: _Engine, arr: np.ndarray, stream: str) -> list[tuple]:
        """Add a frame to ``stream``'s window; a snapshot of the window, oldest first. Entries are ``(frame,)`` for
        temporal nets that take raw windows, ``(2-D result, spectrum, raw frame or None, key)`` for fused ones."""
        entry: tuple
        if engine.fusion is not None:
            key = _frame_key(arr)
            with self._window_lock:  # given as a following frame before: its entry is ready
                early = self._stream(stream, engine).ahead.pop(key, None)
            entry = early if early is not None else self._entry(engine, arr, key)
        else:
            entry = (np.array(arr, dtype=np.float32, copy=True),)
        with self._window_lock:
            kept_by = self._stream(stream, engine)
            kept = kept_by.frames
            if kept_by.one_pass:  # back from one pass: the window's 2-D results stop where one pass began
                kept.clear()
                kept_by.past.clear()  # not needed again before the next change of way, which rebuilds it
            kept_by.one_pass = False
            if kept and kept[-1][0].shape != entry[0].shape:
                kept.clear()  # new ROI / binning: old frames no longer line up
            kept.append(entry)
            return list(kept)

    def _keep_output(self, engine: _Engine, frames_key: tuple[tuple[bytes, ...], int], out: np.ndarray) -> None:
        """Keep a second-pass output for another stream whose window holds the same frames around the same one
        (bounded); ``frames_key``: the window's frame keys and the index of the frame denoised."""
        with self._window_lock:
            if engine is not self._current():
                return  # swapped meanwhile: the old model's output is of no use to anyone (and would pin it)
            self._outputs.pop(frames_key, None)
            self._outputs[frames_key] = (engine, out.copy())
            while len(self._outputs) > SHARED_OUTPUTS_MAX or (
                    len(self._outputs) > 1 and sum(o.nbytes for _, o in self._outputs.values()) > SHARED_OUTPUTS_BYTES):
                self._outputs.popitem(last=False)

    def _frame_result(self, engine: _Engine, frame: np.ndarray,
                      key: bytes) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A live frame's 2-D result and registration spectrum (one FFT), computed once per frame and model.

        Keyed by the frame's bytes (``key``: :func:`_frame_key`; identical pixels give an identical result, so no
        caller has to name frames), kept for the last frames up to ``SHARED_RESULTS_BYTES``: the recorder, a few
        frames behind the display, reuses what the display computed.
        """
        assert engine.fusion is not None  # fused temporal models only
        with self._window_lock:
            hit = self._shared.get(key)
            if hit is not None and hit[0] is engine:
                self.shared_hits += 1
                return hit[1], hit[2]
        d = self._denoised_units(engine, frame[None])[0]
        spectrum = engine.fusion.spectra(d)
        if engine is not self._current():
            return d, spectrum  # swapped meanwhile: the old model's result is not kept for anyone else
        with self._window_lock:
            old = self._shared.pop(key, None)
            if old is not None:
                self._shared_bytes -= _result_bytes(old[1], old[2])
            self._shared[key] = (engine, d, spectrum)
            self._shared_bytes += _result_bytes(d, spectrum)
            while self._shared and (self._shared_bytes > SHARED_RESULTS_BYTES
                                    or len(self._shared) > SHARED_RESULTS_MAX):
                _, (_, old_d, old_spectrum) = self._shared.popitem(last=False)
                self._shared_bytes -= _result_bytes(old_d, old_spectrum)
        return d, spectrum

    def _stream(self, stream: str, engine: _Engine) -> _Stream:
        """What ``stream`` keeps for ``engine`` (a new one when the stream was filled by another model).
        Call with ``_window_lock`` held."""
        kept = self._streams.get(stream)
        if kept is None or kept.engine is not engine:
            kept = _Stream(engine, deque(maxlen=engine.window))
            self._streams[stream] = kept
        return kept

    def reset(self) -> None:
        """Forget the frames kept by :meth:`push` (e.g. after moving the stage)."""
        with self._window_lock:
            self._streams.clear()
            self._shared.clear()
            self._shared_bytes = 0
            self._outputs.clear()

    def drop_stream(self, stream: str) -> None:
        """Forget one stream's window (its field will not come back soon, and its frames hold memory)."""
        with self._window_lock:
            self._streams.pop(stream, None)

    def warmup(self, shape: tuple[int, int] = (256, 256)) -> None:
        """Run one dummy frame so the first real frame is not slowed by lazy initialisation."""
        dummy = np.full(shape, self.normalizer.offset + self.normalizer.gain, dtype=np.float32)
        self.denoise(dummy)
        if self._current().fusion is not None:  # the fusion's FFTs too, in a stream of its own
            self.push(dummy, stream="warmup")
            self.push(dummy, stream="warmup")
            with self._window_lock:
                self._streams.pop("warmup", None)

    # ------------------------------------------------------------------ core
    def _frames_per_call(self, engine: _Engine, h: int, w: int, t: int = 1) -> int:
        return max(1, min(self._batch_size, engine.pixel_budget // max(1, h * w * t)))

    def _run_frames(self, engine: _Engine, frames: np.ndarray) -> np.ndarray:
        """2-D nets: frames [N, H, W] (ADU) -> denoised [N, H, W] float32 (ADU)."""
        x = self._to_device(frames)
        y = self._infer(engine, engine.normalizer.forward_torch(x)[:, None], None)[:, 0]
        return self._finish(engine, y, frames)

    def _run_windows(self, engine: _Engine, windows: np.ndarray, select: np.ndarray) -> np.ndarray:
        """Temporal nets: windows [N, T, H, W] -> frame ``select[n]`` of each, denoised [N, H, W]."""
        x = self._to_device(windows)
        y = self._infer(engine, engine.normalizer.forward_torch(x)[:, None], torch.as_tensor(select))[:, 0]
        raw = windows[np.arange(windows.shape[0]), select]
        return self._finish(engine, y, raw)

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self._device)

    def _finish(self, engine: _Engine, y: torch.Tensor, raw: np.ndarray) -> np.ndarray:
        out = engine.normalizer.inverse_torch(y).cpu().numpy().astype(np.float32, copy=False)
        return self._keep_raw_values(engine, out, raw)

    @staticmethod
    def _keep_raw_values(engine: _Engine, out: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """``out`` with the raw values where the camera saturated (the network cannot know what is there), and
        every frame of one value everywhere returned as it is: it holds no noise and nothing to estimate (a blank
        frame in a stack, padding), and the network, which never saw a frame without noise, would turn its zeros into
        a faint glow (13-64 on a blank frame of an audited stack)."""
        mask = engine.normalizer.saturated_mask(raw)
        if mask is not None and mask.any():
            out = np.where(mask, raw.astype(np.float32), out)
        flat_raw = raw.reshape(-1, *raw.shape[-2:])
        constant = flat_raw.max(axis=(-2, -1)) == flat_raw.min(axis=(-2, -1))
        if constant.any():
            out = np.array(out, dtype=np.float32, copy=True).reshape(flat_raw.shape)
            out[constant] = flat_raw[constant]
            out = out.reshape(raw.shape)
        return out

    def _reduced_weights(self, model: nn.Module) -> bool:
        """True where bf16 runs as cast weights (a CPU and a network that can): faster than autocast (118 against
        146 ms per 512² frame with the fast backbone in a 1-thread probe on the development CPU)."""
        return (self._device.type == "cpu" and self._precision is torch.bfloat16
                and hasattr(model, "to_reduced_precision"))

    def _autocast(self, engine: _Engine) -> Any:
        if self._precision is None or self._reduced_weights(engine.model):
            return nullcontext()  # fp32, or the engine's weights are bf16 already (see _prepare)
        return torch.autocast(device_type=self._device.type, dtype=self._precision)

    def _call_model(self, engine: _Engine, x: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        if self._networks.enabled and x.dim() == 4:
            with self._lock:  # the latest shapes of 2-D passes, which a swap compiles the next network for
                self._shapes_run[tuple(x.shape)] = None
                self._shapes_run.move_to_end(tuple(x.shape))
                while len(self._shapes_run) > MAX_PRECOMPILED_SHAPES:
                    self._shapes_run.popitem(last=False)
        with torch.inference_mode(), self._autocast(engine):
            if engine.channels_last and x.dim() == 4:
                y = self._networks(engine.compiled, engine.model,
                                   x.contiguous(memory_format=torch.channels_last)).contiguous()
            else:
                y = self._networks(engine.compiled, engine.model, x)
        y = y.float()
        if select is not None:  # [B, C, T, H, W] -> [B, C, H, W]
            y = y[torch.arange(y.shape[0], device=y.device), :, select.to(y.device)]
        return y

    def _tiles(self, engine: _Engine, h: int, w: int, t: int) -> tuple[_AxisPlan, _AxisPlan] | None:
        """How to cut an ``h`` x ``w`` input (of ``t`` frames) into tiles, or None to run whole frames."""
        budget = engine.pixel_budget
        if engine.whole_frames:
            return None
        if self._oom_tile is None and self._tile_size is None:
            if h * w * t <= budget:
                return None
            return _tile_plan(h, w, max(1, budget // t), self._max_auto_tile, engine.margin, engine.multiple)
        side = self._oom_tile if self._oom_tile is not None else self._tile_size
        assert side is not None
        if self._oom_tile is None and h <= side and w <= side and h * w * t <= budget:
            return None
        minimum = 2 * engine.margin + engine.multiple
        if side < minimum:
            if self._oom_tile is None:
                raise ConfigError(
                    f"tile_size {side} is too small for overlap {engine.margin} px; expected at least {minimum}."
                )
            side = 2 * engine.margin + 4 * engine.multiple
        return (_axis_plan(h, side, engine.margin, engine.multiple),
                _axis_plan(w, side, engine.margin, engine.multiple))

    @property
    def ensemble(self) -> int:
        """Number of flip/rotation variants averaged per frame (1: off)."""
        return self._ensemble

    def _infer(self, engine: _Engine, x: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        """Normalised input [N, 1, (T), H, W] -> network output [N, C, H, W], self-ensembled if asked."""
        if self._ensemble == 1:
            return self._infer_once(engine, x, select)
        total: torch.Tensor | None = None
        for k in range(4 if self._ensemble >= 4 else 1):
            for flip in ((False, True) if self._ensemble != 4 else (False,)):
                v = torch.rot90(x, k, dims=(-2, -1))
                v = torch.flip(v, dims=(-1,)) if flip else v
                y = self._infer_once(engine, v.contiguous(), select)
                y = torch.flip(y, dims=(-1,)) if flip else y
                y = torch.rot90(y, -k, dims=(-2, -1))
                total = y if total is None else total + y
        assert total is not None  # the loops run at least once
        return total / self._ensemble

    def _infer_once(self, engine: _Engine, x: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        """Normalised input [N, 1, (T), H, W] -> network output [N, C, H, W], tiled if needed."""
        while True:
            plan: tuple[_AxisPlan, _AxisPlan] | None = None
            try:
                plan = self._tiles(engine, x.shape[-2], x.shape[-1], x.shape[2] if x.dim() == 5 else 1)
                if plan is None:
                    return self._call_model(engine, x, select)
                return self._infer_tiled(engine, x, select, plan)
            except RuntimeError as exc:
                if self._device.type != "cuda" or not _is_oom(exc):
                    raise
                torch.cuda.empty_cache()
                if engine.whole_frames:
                    raise LivedenoiseError(
                        f"The GPU ran out of memory on a whole {x.shape[-2]}x{x.shape[-1]} frame, and {engine.name!r} "
                        "cannot run in tiles (its processing takes statistics of each whole frame); use device 'cpu'."
                    ) from exc
                current = self._oom_tile or (max(plan[0].tile, plan[1].tile) if plan else max(x.shape[-2:]))
                smaller = max(current // 2, 2 * engine.margin + engine.multiple)
                if smaller >= current and self._batch_size == 1:
                    raise LivedenoiseError(
                        f"The GPU ran out of memory even with {current}-pixel tiles and batch size 1; "
                        "use a smaller model or device 'cpu'."
                    ) from exc
                self._batch_size = max(1, self._batch_size // 2) if smaller >= current else self._batch_size
                self._oom_tile = smaller
                log.warning("GPU out of memory: retrying with %d-pixel tiles, batch size %d.",
                            smaller, self._batch_size)

    def _infer_tiled(self, engine: _Engine, x: torch.Tensor, select: torch.Tensor | None,
                     plan: tuple[_AxisPlan, _AxisPlan]) -> torch.Tensor:
        if not engine.tile_safe:
            log.warning("Model %r normalises over whole images (InstanceNorm): tiled output can differ from "
                        "whole-frame output.", engine.name)
        h, w = x.shape[-2:]
        t = x.shape[2] if x.dim() == 5 else 1
        rows = [r for r in (_tile_window(i, plan[0], engine.margin, h) for i in range(plan[0].count)) if r]
        cols = [c for c in (_tile_window(i, plan[1], engine.margin, w) for i in range(plan[1].count)) if c]
        # Tiles of one input shape run together (edge tiles are shorter: nothing is padded at the frame's border).
        groups: dict[tuple[int, int], list] = {}
        for n in range(x.shape[0]):
            for r in rows:
                for c in cols:
                    groups.setdefault((r[1] - r[0], c[1] - c[0]), []).append((n, r, c))
        out: torch.Tensor | None = None
        for (th, tw), jobs in groups.items():
            per_call = max(1, min(self._batch_size, engine.pixel_budget // max(1, th * tw * t)))
            for start in range(0, len(jobs), per_call):
                chunk = jobs[start:start + per_call]
                batch = torch.cat([x[n:n + 1, ..., r[0]:r[1], c[0]:c[1]] for n, r, c in chunk])
                sel = None if select is None else select[[n for n, _, _ in chunk]]
                y = self._call_model(engine, batch, sel)
                if out is None:
                    out = torch.empty((x.shape[0], y.shape[1], h, w), dtype=torch.float32, device=y.device)
                for k, (n, r, c) in enumerate(chunk):
                    out[n, :, r[2]:r[3], c[2]:c[3]] = y[k, :, r[2] - r[0]:r[3] - r[0], c[2] - c[0]:c[3] - c[0]]
        assert out is not None
        return out


def _tile_window(i: int, axis: _AxisPlan, margin: int, n: int) -> tuple[int, int, int, int] | None:
    """Tile ``i`` along an axis of ``n`` pixels: (input start, input end, kept start, kept end), or None when
    the tile lies past the end. The input reaches ``margin`` pixels beyond the kept part, but never past the
    frame: at the frame's border a tile sees what a whole-frame pass sees (the network's own padding), so a
    tiled frame equals the whole-frame result, borders included."""
    keep0 = i * axis.core
    if keep0 >= n:
        return None
    return max(0, keep0 - margin), min(n, keep0 + axis.core + margin), keep0, min(n, keep0 + axis.core)


def denoise_array(
    checkpoint: ModelSource, data: np.ndarray, *, device: str = "auto", **options: Any
) -> np.ndarray:
    """One-call convenience: ``Denoiser(checkpoint, device=device, **options).denoise_stack(data)``."""
    return Denoiser(checkpoint, device=device, **options).denoise_stack(data)


__all__: Sequence[str] = ("DEFAULT_PIXEL_BUDGET", "PRECISIONS", "Denoiser", "denoise_array")
