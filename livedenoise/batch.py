"""Post-hoc denoising of saved datasets, block by block, with bounded memory, resumable, on dask.

How a run goes (:func:`denoise_dataset`):

1. **Validate everything before writing anything**: inputs open lazily (metadata only), the
   model loads, output names are free and outside every input, the dtype/format policy is
   consistent. A user error here leaves the output folder untouched.
2. **Plan** (:func:`plan_blocks`): the leading axes (everything but Y, X) are cut into
   hyper-rectangular blocks so that one block -- its input, the float32 result and the cast copy
   -- plus the network's working memory fits ``memory_budget / concurrent blocks``. The network's
   share is enforced through the Denoiser's pixel budget (tile size and frames per call), so the
   model, not only the data, stays within the budget.
3. **Preallocate** the output and write a **manifest** (the resume marker): input fingerprint,
   model sha256, settings, block plan, output layout. Every finished block is appended to a
   ``.done.jsonl`` log *after* its pixels were written and fsynced.
4. **Run** the blocks on a local thread pool or an existing ``dask.distributed`` cluster; each
   task re-opens the input and the model *from their paths* (never pickled torch modules),
   reads its block, denoises, casts, writes it in place, and returns counts.
5. **Finalize**: provenance gets the final counts; NDTiff outputs are assembled from the staged
   blocks; the manifest says ``complete``.

``--resume`` re-reads the manifest, refuses if the input, model or settings changed, and runs
only the blocks not in the log: the output is identical to an uninterrupted run (blocks are
independent and deterministic). ``--overwrite`` removes a previous output first.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as _dt
import hashlib
import itertools
import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from livedenoise import __version__
from livedenoise.diskspace import ensure_room, format_bytes as _format_bytes
from livedenoise.errors import BatchIncomplete, CheckpointError, ConfigError, InputDataError, LivedenoiseError
from livedenoise.io import (
    ImageDataset,
    InputItem,
    NpyBlockTarget,
    OmeTiffTarget,
    SourceSpec,
    create_ome_tiff,
    expand_inputs,
    open_dataset,
    remove_path,
    update_ome_provenance,
    validate_axes,
    write_ndtiff,
)
from livedenoise.io_omezarr import OmeZarrTarget, create_ome_zarr, forget_open_arrays, update_zarr_provenance
from livedenoise.models import ACTIVATION_BYTES_PER_PIXEL_CHANNEL
from livedenoise.weights import TEMPORAL_BACKBONE

log = logging.getLogger("livedenoise")

FORMATS = ("ome-tiff", "ndtiff", "ome-zarr")
DTYPES = ("float32", "input", "uint16", "uint8")
#: "fit": a noise model fitted to every input and channel (default); "stored": the model's own normaliser.
NOISE_MODELS = ("fit", "stored")
MANIFEST_VERSION = 2  # 2: OME-TIFF outputs are written under .livedenoise/<stem>.partial.ome.tif, renamed when complete
STATE_DIR = ".livedenoise"
#: Smallest kept centre of a tile (pixels per side); tiles are never narrower than 2 x margin + this.
MIN_TILE_CORE = 64
#: Frames smaller than this many pixels are batched (up to 4 per network call).
MIN_CALL_PIXELS = 256 * 256
#: Bytes per pixel of the frames of one Denoiser call (float32 input, normalised, padded and output copies).
CALL_BYTES_PER_PIXEL = 20
#: Bytes per pixel of per-block temporaries besides input and output (bool masks, finite checks).
EXTRA_BYTES_PER_PIXEL = 2


@contextlib.contextmanager
def _connection(scheduler: Any, dry_run: bool) -> Iterator[tuple[Any, int, int, bool] | None]:
    """The dask connection for a job (None when local or a dry run); closes a client it opened itself."""
    connection = _connect(scheduler) if scheduler is not None and not dry_run else None
    try:
        yield connection
    finally:
        if connection is not None and connection[3]:
            connection[0].close()


# ---------------------------------------------------------------------------------------------
# small parsers
# ---------------------------------------------------------------------------------------------
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(value: str | int | float) -> int:
    """``"512MB"``, ``"1.5GiB"``, ``"800M"`` or a number of bytes -> bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"Memory budget {value!r} must be positive.")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"Memory budget {value!r} is not understood; expected e.g. '512MB', '2GB' or '1.5GiB'.")
    result = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if result <= 0:
        raise ConfigError(f"Memory budget {value!r} must be positive.")
    return result


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A model as workers see it: a checkpoint path plus its sha256 (or, in-process only, a registry key)."""

    name: str
    sha256: str
    path: str | None = None
    arch: str | None = None
    first_width: int = 32
    normalizer_json: str = "{}"
    local_key: str | None = None
    channel: int | None = None
    weights_bytes: int = 0
    temporal: bool = False
    margin: int = 0  # tile context the Denoiser adds on each side (receptive-field radius on the alignment grid)
    #: The noise model fitted to the data this ref denoises (NoiseFit.to_dict() as JSON); replaces the stored normaliser.
    noise_json: str | None = None
    #: Camera calibration file whose per-pixel maps the fitted normaliser uses (None: scalars only).
    calibration: str | None = None
    #: Frames outside the backbone's range are copied unchanged instead of denoised.
    passthrough: bool = False

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "path": self.path, "sha256": self.sha256, "arch": self.arch,
               "normalizer": json.loads(self.normalizer_json), **({"channel": self.channel} if self.channel is not None else {})}
        if self.noise_json is not None:
            out["stored_normalizer"] = out.pop("normalizer")
            noise = json.loads(self.noise_json)
            out["normalizer"] = noise["normalizer"]
            out["noise_model"] = noise
        if self.passthrough:
            out["passthrough"] = True
        return out

    def fitted_normalizer(self) -> Any:
        """The normaliser fitted to the data (with per-pixel maps from the calibration), or None."""
        if self.noise_json is None:
            return None
        from livedenoise.normalization import Normalizer

        noise = json.loads(self.noise_json)
        norm = Normalizer.from_dict(noise["normalizer"])
        if noise.get("pixel_maps") and self.calibration:
            from livedenoise.calibration import CameraCalibration

            cal = CameraCalibration.load(self.calibration)
            averaged = int(noise.get("averaged", 1))
            norm = norm.copy(pixel_offset=cal.offset, pixel_gain=cal.gain / averaged)
        return norm


#: Denoisers kept per process (each holds its own copy of the weights).
MAX_CACHED_DENOISERS = 4
#: In-process models without a file (API users passing objects; tests). Never sent to other processes. The most
#: recently used ``MAX_LOCAL_MODELS`` are kept (a notebook that denoises with many models does not keep them all).
MAX_LOCAL_MODELS = 16
_LOCAL_MODELS: OrderedDict[str, Any] = OrderedDict()
_LOCAL_MODELS_LOCK = threading.Lock()


def _keep_local_model(sha: str, model: Any) -> None:
    with _LOCAL_MODELS_LOCK:
        _LOCAL_MODELS[sha] = model
        _LOCAL_MODELS.move_to_end(sha)
        while len(_LOCAL_MODELS) > MAX_LOCAL_MODELS:
            _LOCAL_MODELS.popitem(last=False)


def _local_model(key: str | None) -> Any:
    """The in-process model ``key`` (refreshed as recently used), or None."""
    if key is None:
        return None
    with _LOCAL_MODELS_LOCK:
        model = _LOCAL_MODELS.get(key)
        if model is not None:
            _LOCAL_MODELS.move_to_end(key)
        return model
_DENOISERS: dict[tuple, Any] = {}
_DENOISERS_LOCK = threading.Lock()
_MODEL_THREAD: cf.ThreadPoolExecutor | None = None


def _model_thread() -> cf.ThreadPoolExecutor:
    """The one thread of this process that runs networks.

    torch keeps a separate OpenMP thread pool for every Python thread that calls it; two block
    threads calling the network would double the compute threads (each spinning on the same
    cores) and run several times slower. So block threads read, cast and write in parallel,
    while every network pass goes through this single thread, one at a time.
    """
    global _MODEL_THREAD
    with _DENOISERS_LOCK:
        if _MODEL_THREAD is None:
            _MODEL_THREAD = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="livedenoise-model")
        return _MODEL_THREAD
#: Inputs opened by block workers, per process; the most recently used ``MAX_OPEN_DATASETS`` stay open (a
#: long-lived dask worker serving many jobs does not keep every file it ever read).
MAX_OPEN_DATASETS = 16
_DATASETS: OrderedDict[tuple[SourceSpec, tuple[int, int]], ImageDataset] = OrderedDict()
_DATASETS_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _arch_is_temporal(arch: str) -> bool:
    from livedenoise.models import ARCHITECTURES

    return bool(getattr(ARCHITECTURES.get(str(arch).lower()), "is_temporal", False))


def _first_width(arch: str | None, kwargs: dict[str, Any], model: Any = None) -> int:
    if arch in ("unet", "unet-temporal") and kwargs.get("widths"):
        return int(list(kwargs["widths"])[0])
    if arch == "cnnt" and kwargs.get("channels"):
        return int(kwargs["channels"])
    if model is not None:
        import torch

        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
                return int(m.out_channels)
    return 32


def _margin(model: Any) -> int:
    """Receptive-field radius rounded up to the network's alignment grid (what the Denoiser pads tiles with)."""
    from livedenoise.models import receptive_field_radius, size_multiple

    try:
        radius, multiple = int(receptive_field_radius(model)), max(1, int(size_multiple(model)))
    except Exception:  # pragma: no cover - exotic models: plan without a margin
        return 0
    return int(math.ceil(radius / multiple) * multiple)


def _arch_margin(arch: str, arch_kwargs: dict[str, Any]) -> int:
    from livedenoise.models import build_model

    try:
        return _margin(build_model(arch, **arch_kwargs))
    except LivedenoiseError:
        return 0


def _state_sha256(model: Any, normalizer: Any) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(normalizer.to_dict() if normalizer is not None else None, sort_keys=True).encode())
    return h.hexdigest()


def resolve_model(model: Any, *, channel: int | None = None) -> ModelRef:
    """Turn what the user gave (``"standard"``, ``"fast"``, a path, a Checkpoint, a Denoiser, ``(model, normalizer)``) into a ModelRef.

    Shipped names and paths are checked here (readable header), so a missing or corrupt model
    fails before anything is written.
    """
    from livedenoise.checkpoint import Checkpoint, available_backbones, backbone_path, read_metadata

    if isinstance(model, ModelRef):
        return model
    if isinstance(model, str) and os.path.sep not in model and not model.endswith(".safetensors") and (
            model in ("standard", "fast") or model in available_backbones()):
        path = backbone_path(model)
        if not path.is_file():
            names = available_backbones()
            raise CheckpointError(f"Backbone {model!r} is not installed ({path} is missing); available: "
                                  f"{', '.join(names) if names else 'none (run `livedenoise pretrain`)'}.")
        model = path
    if isinstance(model, (str, os.PathLike)):
        from livedenoise.modelspec import model_file

        if not Path(model).exists():
            raise CheckpointError(f"Model {str(model)!r} is neither a shipped backbone (fast, standard, temporal) nor an existing "
                                  "checkpoint file (.safetensors) or BioImage Model Zoo package (.zip).")
        path = Path(model)
        checkpoint = model_file(path)  # a bioimage.io package: the livedenoise checkpoint inside it
        if not checkpoint.is_file():
            raise CheckpointError(f"Model {str(model)!r} is not a checkpoint file (.safetensors) or a BioImage Model Zoo "
                                  "package exported by livedenoise.")
        meta = read_metadata(checkpoint)
        # the file the user gave (a package stays a package: each worker takes the checkpoint out itself)
        path = path if path.is_file() else checkpoint
        return ModelRef(name=str(meta.get("name") or checkpoint.stem), sha256=file_sha256(path), path=str(path.resolve()),
                        weights_bytes=checkpoint.stat().st_size, temporal=_arch_is_temporal(str(meta["arch"])),
                        margin=_arch_margin(str(meta["arch"]), dict(meta["arch_kwargs"])),
                        arch=str(meta["arch"]), first_width=_first_width(meta["arch"], meta["arch_kwargs"]),
                        normalizer_json=json.dumps(meta.get("normalizer", {}), sort_keys=True), channel=channel)
    if isinstance(model, Checkpoint):
        if model.path is not None and Path(model.path).is_file():
            ref = resolve_model(model.path, channel=channel)
            return ModelRef(**{**asdict(ref), "name": model.name})
        sha = _state_sha256(model.model, model.normalizer)
        _keep_local_model(sha, model)
        return ModelRef(name=model.name, sha256=sha, arch=model.arch, first_width=_first_width(model.arch, model.arch_kwargs),
                        temporal=bool(getattr(model.model, "is_temporal", False)), margin=_margin(model.model),
                        normalizer_json=json.dumps(model.normalizer.to_dict(), sort_keys=True), local_key=sha, channel=channel)
    torch_model = getattr(model, "model", None)
    normalizer = getattr(model, "normalizer", None)
    name = str(getattr(model, "name", type(model).__name__))
    if isinstance(model, tuple) and len(model) == 2:
        torch_model, normalizer = model
        name = type(torch_model).__name__
    if torch_model is None or not hasattr(torch_model, "state_dict"):
        raise ConfigError(f"Model {model!r} is not usable; expected 'standard', 'fast', a checkpoint path, "
                          "a Checkpoint, a Denoiser or (torch model, Normalizer).")
    sha = _state_sha256(torch_model, normalizer)
    _keep_local_model(sha, model)
    return ModelRef(name=name, sha256=sha, first_width=_first_width(None, {}, torch_model),
                    temporal=bool(getattr(model, "is_temporal", False) or getattr(torch_model, "is_temporal", False)),
                    margin=_margin(torch_model),
                    normalizer_json=json.dumps(normalizer.to_dict() if normalizer is not None else {}, sort_keys=True),
                    local_key=sha, channel=channel)


@dataclass(frozen=True)
class DenoiserOptions:
    """How each worker builds its Denoiser (the pixel budget bounds the network's working memory)."""

    device: str = "auto"
    pixel_budget: int = 1024 * 1024
    batch_size: int = 4
    ensemble: int = 1  #: flip/rotation self-ensemble size (see ``Denoiser``)
    precision: str = "auto"  #: ``Denoiser`` precision (a job records what ran: fp32, bf16 or fp16)


def get_denoiser(ref: ModelRef, options: DenoiserOptions) -> Any:
    """The process-wide Denoiser for ``ref`` (built once per process, verified against its sha256)."""
    key = (ref.path, ref.sha256, ref.local_key, ref.noise_json, ref.calibration, options)
    with _DENOISERS_LOCK:
        hit = _DENOISERS.get(key)
    if hit is not None:
        return hit
    from livedenoise.inference import Denoiser

    if ref.path is not None:
        if not Path(ref.path).is_file():
            raise CheckpointError(f"Checkpoint {ref.path} is missing on this machine; workers need it at the same path.")
        sha = file_sha256(ref.path)
        if sha != ref.sha256:
            raise CheckpointError(f"Checkpoint {ref.path} changed since the job started (sha256 {sha[:12]}... "
                                  f"instead of {ref.sha256[:12]}...).")
        source: Any = ref.path
    else:
        source = _local_model(ref.local_key)
        if source is None:
            raise CheckpointError(f"Model {ref.name!r} exists only in the process that started the job; give workers a "
                                  "checkpoint path (save it with livedenoise.checkpoint.save_checkpoint).")
    fitted = ref.fitted_normalizer()
    if hasattr(source, "denoise_stack") and not isinstance(source, (str, tuple)):
        denoiser = source  # an already built Denoiser (or compatible object)
        if fitted is not None and isinstance(source, Denoiser):
            denoiser = Denoiser((source.model, fitted), device=options.device, pixel_budget=options.pixel_budget,
                                batch_size=options.batch_size, ensemble=options.ensemble, precision=options.precision)
    else:
        denoiser = Denoiser(source, normalizer=fitted, device=options.device, pixel_budget=options.pixel_budget,
                            batch_size=options.batch_size, ensemble=options.ensemble, precision=options.precision)
    with _DENOISERS_LOCK:
        while len(_DENOISERS) >= MAX_CACHED_DENOISERS:  # long-lived processes (notebooks, workers): keep a few
            _DENOISERS.pop(next(iter(_DENOISERS)))
        return _DENOISERS.setdefault(key, denoiser)


def is_time_lapse(ds: ImageDataset) -> bool:
    """True for data with a time axis of several frames (what a temporal model needs)."""
    return "T" in ds.axes[:-2] and ds.size("T") > 1


def default_model_for(datasets: Sequence[ImageDataset]) -> str:
    """The shipped model ``denoise`` uses when none is named.

    Time-lapses (every input has a T axis of several frames) get the temporal backbone, which uses the
    neighbouring frames, when it is installed; anything else gets
    :data:`livedenoise.checkpoint.DEFAULT_BACKBONE`, frame by frame.
    """
    from livedenoise.checkpoint import DEFAULT_BACKBONE, available_backbones

    if datasets and all(is_time_lapse(ds) for ds in datasets) and TEMPORAL_BACKBONE in available_backbones():
        return TEMPORAL_BACKBONE
    return DEFAULT_BACKBONE


def _check_time_axes(items: Sequence[Any], refs: Sequence[ModelRef]) -> None:
    """A temporal model needs a time axis: refuse single frames with one sentence, before anything is written."""
    name = next(r.name for r in refs if r.temporal)
    for it in items:
        if not is_time_lapse(it.dataset):
            raise InputDataError(
                f"{it.item.path} has no time axis of several frames (axes {it.dataset.axes}, shape "
                f"{tuple(it.dataset.shape)}), but model {name!r} denoises time-lapses from neighbouring frames; use a "
                "2-D model (--model fast or standard) for single frames, or --axes with a T if the file is a time-lapse.")


def _is_temporal(denoiser: Any) -> bool:
    return bool(getattr(denoiser, "is_temporal", False))


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockPlan:
    """Hyper-rectangular blocks over the leading axes; ``chunks[i]`` is the block length along axis ``i``."""

    axes: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    bytes_per_block: int
    denoiser: DenoiserOptions

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return self.shape[:-2]

    @property
    def block_shape(self) -> tuple[int, ...]:
        return tuple(self.chunks) + tuple(self.shape[-2:])

    @property
    def frames_per_block(self) -> int:
        return int(np.prod(self.chunks, dtype=np.int64))

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / c) for n, c in zip(self.lead_shape, self.chunks))

    @property
    def n_blocks(self) -> int:
        return int(np.prod(self.grid, dtype=np.int64))

    def dask_chunks(self) -> tuple[tuple[int, ...], ...]:
        """The same plan as dask chunks (for ``ImageDataset.to_dask``)."""
        out = []
        for n, c in zip(self.lead_shape, self.chunks):
            out.append(tuple(min(c, n - s) for s in range(0, n, c)))
        return tuple(out) + ((self.shape[-2],), (self.shape[-1],))

    def block(self, index: int) -> tuple[tuple[int, int], ...]:
        """``(start, stop)`` along each leading axis of block ``index`` (C order over the grid)."""
        pos = np.unravel_index(index, self.grid) if self.grid else ()
        return tuple((int(p) * c, min(int(p) * c + c, n)) for p, c, n in zip(pos, self.chunks, self.lead_shape))

    def blocks(self) -> Iterator[tuple[int, tuple[tuple[int, int], ...]]]:
        for i in range(self.n_blocks):
            yield i, self.block(i)


def plan_blocks(
    shape: Sequence[int],
    axes: str,
    in_dtype: np.dtype | str,
    out_dtype: np.dtype | str,
    memory_budget: int,
    *,
    concurrency: int = 1,
    split_axes: str = "",
    whole_axes: str = "",
    first_width: int = 32,
    margin: int = 0,
    weights_bytes: int = 0,
    window: int = 1,
    device: str = "auto",
    ensemble: int = 1,
    precision: str = "auto",
) -> BlockPlan:
    """Largest blocks whose memory (data + network working set) fits ``memory_budget / concurrency``.

    The network gets its share first: a whole frame per call when that fits (tiles only cost
    time), otherwise the largest tiles that leave room for the smallest block, but never tiles
    whose kept centre is narrower than the two context ``margin``s around it (mostly margin: many
    times slower). The rest of the block's share holds frames. ``split_axes`` are cut into single
    slices (e.g. ``C`` with one model per channel), ``whole_axes`` must lie entirely in every
    block (``T`` for temporal networks); ``weights_bytes`` is memory held once for the whole job
    (network weights), ``window`` the frames per call of a temporal network. Blocks grow from the
    innermost leading axis outwards, so they are as contiguous on disk as possible.
    Raises :class:`ConfigError` when not even the smallest allowed block fits.
    """
    shape = tuple(int(s) for s in shape)
    in_item, out_item = np.dtype(in_dtype).itemsize, np.dtype(out_dtype).itemsize
    per_block = (int(memory_budget) - int(weights_bytes)) // max(1, int(concurrency))
    pixels = shape[-1] * shape[-2]
    lead = shape[:-2]
    lead_axes = axes[:-2]
    win = max(1, int(window))
    bpp_model = ACTIVATION_BYTES_PER_PIXEL_CHANNEL * max(1, first_width)

    def network_bytes(pixel_budget: int) -> int:
        # activations, plus the float32 copies (converted, normalised, padded, result) of one call's frames
        frames_per_call = max(1, min(4, pixel_budget // (pixels * win)))
        return pixel_budget * bpp_model + frames_per_call * pixels * win * CALL_BYTES_PER_PIXEL

    # Denoiser output is float32 in any case; a second copy only when casting to another dtype
    bytes_per_pixel = in_item + 4 + (out_item if np.dtype(out_dtype) != np.float32 else 0) + EXTRA_BYTES_PER_PIXEL
    frame_bytes = pixels * bytes_per_pixel
    need_whole = [i for i, a in enumerate(lead_axes) if a in whole_axes]
    minimum = int(np.prod([lead[i] for i in need_whole], dtype=np.int64)) if need_whole else 1
    side = 2 * int(margin) + max(2 * int(margin), MIN_TILE_CORE)
    floor = min(pixels, side * side) * win
    batch_frames = min(4, max(1, MIN_CALL_PIXELS // pixels))  # small frames: several per call
    pixel_budget = pixels * win * batch_frames
    room = per_block - minimum * frame_bytes
    while network_bytes(pixel_budget) > room and pixel_budget > floor:
        pixel_budget = max(floor, int(pixel_budget * 0.8))
    model_mem = network_bytes(pixel_budget)
    data_budget = per_block - model_mem
    cap = data_budget // frame_bytes if data_budget > 0 else 0
    if cap < minimum:
        what = f"a full {'/'.join(lead_axes[i] for i in need_whole)} stack of {minimum} frames" if need_whole else "one frame"
        need = concurrency * (minimum * frame_bytes + network_bytes(floor)) + weights_bytes
        raise ConfigError(
            f"Memory budget {_format_bytes(memory_budget)} is too small for {what} of {shape[-2]}x{shape[-1]} pixels "
            f"with {concurrency} block(s) in flight; expected at least {_format_bytes(need)} (--memory-budget)."
        )
    chunks = [1] * len(lead)
    prod = 1
    for i in need_whole:
        chunks[i] = lead[i]
        prod *= lead[i]
    for i in reversed(range(len(lead))):
        if i in need_whole or lead_axes[i] in split_axes:
            continue
        fit = cap // prod
        if fit >= lead[i]:
            chunks[i] = lead[i]
            prod *= lead[i]
            continue
        chunks[i] = max(1, int(fit))
        prod *= chunks[i]
        break
    block_bytes = prod * frame_bytes + model_mem
    return BlockPlan(axes, shape, tuple(chunks), int(block_bytes),
                     DenoiserOptions(device=device, pixel_budget=int(pixel_budget), batch_size=batch_frames,
                                     ensemble=int(ensemble), precision=str(precision)))


# ---------------------------------------------------------------------------------------------
# one block (runs in a worker thread or a dask worker)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs for one block; small and picklable (paths, not data or models)."""

    index: int
    ranges: tuple[tuple[int, int], ...]
    source: SourceSpec
    models: tuple[ModelRef, ...]
    channel_axis: int | None
    temporal_axis: int | None
    options: DenoiserOptions
    out_dtype: str
    target: OmeTiffTarget | OmeZarrTarget | NpyBlockTarget
    stamp: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class BlockResult:
    index: int
    frames: int
    pixels: int
    clipped: int
    seconds: float
    check: dict[str, Any] | None = None  # residual check of the block's first frame (ResidualCheck.to_dict())
    input_digest: str | None = None  # of the input pixels this block was made from (resume verifies it)


def block_digest(block: np.ndarray) -> str:
    """A 128-bit BLAKE2 digest of a block's pixels: ``--resume`` re-reads every finished block's input and
    compares, so an input changed in place (same size, same first and last MiB) is never mixed with the
    old output. Reading is far cheaper than denoising."""
    return hashlib.blake2b(np.ascontiguousarray(block).data, digest_size=16).hexdigest()


def source_stamp(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(size, mtime_ns) of an input file (of the NDTiff index, or an OME-Zarr's root metadata, for a dataset folder):
    changes when it is rewritten."""
    p = Path(path)
    if p.is_dir():
        p = next((p / n for n in ("NDTiff.index", "zarr.json", ".zattrs") if (p / n).is_file()), p)
    st = p.stat()
    return (int(st.st_size), int(st.st_mtime_ns))


def _dataset_for(spec: SourceSpec, stamp: tuple[int, int]) -> ImageDataset:
    """The opened input for a job, cached per process; keyed by the file's stamp so a rewritten input is re-opened."""
    key = (spec, tuple(stamp))
    with _DATASETS_LOCK:
        ds = _DATASETS.get(key)
        if ds is None:
            if source_stamp(spec.path) != tuple(stamp):
                raise InputDataError(f"{spec.path}: the input changed while it was being denoised; rerun with --resume "
                                     "or --overwrite once it is complete.")
            ds = _DATASETS[key] = open_dataset(spec.path, axes=spec.axes)
        _DATASETS.move_to_end(key)
        while len(_DATASETS) > MAX_OPEN_DATASETS:
            _DATASETS.popitem(last=False)  # dropped, not closed: a job still using it holds its own reference
    return ds


def cast_output(out: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """float32 result -> ``dtype``: integers are rounded and clipped to the type's range; returns the clipped count."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return out.astype(dtype, copy=False), 0
    info = np.iinfo(dtype)
    np.rint(out, out=out)
    clipped = int(np.count_nonzero(out < info.min) + np.count_nonzero(out > info.max))
    np.clip(out, info.min, info.max, out=out)
    return out.astype(dtype), clipped


def denoise_block(denoiser: Any, block: np.ndarray, temporal_axis: int | None) -> np.ndarray:
    """Denoise a block (leading axes + Y, X): frame by frame for 2-D nets, along ``temporal_axis`` for 2D+T nets."""
    if temporal_axis is not None and _is_temporal(denoiser):
        moved = np.moveaxis(block, temporal_axis, -3)
        return np.moveaxis(denoiser.denoise_stack(moved), -3, temporal_axis)
    flat = block.reshape((-1,) + block.shape[-2:])
    return np.asarray(denoiser.denoise_stack(flat), dtype=np.float32).reshape(block.shape)


def process_block(job: BlockJob) -> BlockResult:
    """Read, denoise, cast and write one block; returns what was done (the driver records it)."""
    t0 = time.perf_counter()
    dataset = _dataset_for(job.source, job.stamp)
    key = tuple(slice(a, b) for a, b in job.ranges) + (slice(None), slice(None))
    block = dataset.reader[key]
    ref = job.models[0]
    if len(job.models) > 1 and job.channel_axis is not None:
        ref = job.models[job.ranges[job.channel_axis][0]]
    check = None
    digest = block_digest(block)
    if ref.passthrough:
        out = np.array(block, dtype=np.float32)
    else:
        denoiser = get_denoiser(ref, job.options)
        out = _model_thread().submit(denoise_block, denoiser, block, job.temporal_axis).result()
        check = _block_check(block, out, denoiser)
    del block
    out, clipped = cast_output(out, np.dtype(job.out_dtype))
    if isinstance(job.target, OmeTiffTarget):
        _write_ome_block(job.target, job.ranges, out)
    elif isinstance(job.target, OmeZarrTarget):
        job.target.write_block(job.ranges, out)
    else:
        job.target.write_block(job.index, out)
    frames = int(np.prod(out.shape[:-2], dtype=np.int64))
    return BlockResult(job.index, frames, frames * out.shape[-1] * out.shape[-2], clipped, time.perf_counter() - t0,
                       check, digest)


def _block_check(block: np.ndarray, out: np.ndarray, denoiser: Any) -> dict[str, Any] | None:
    """Residual check of the block's first frame against the denoiser's noise model (cheap: one frame)."""
    from livedenoise.normalization import Normalizer
    from livedenoise.residual_check import check_residual

    norm = getattr(denoiser, "normalizer", None)
    if not isinstance(norm, Normalizer):
        return None
    raw = np.asarray(block).reshape((-1,) + block.shape[-2:])[0]
    return check_residual(raw, out.reshape((-1,) + out.shape[-2:])[0], norm).to_dict()


def _write_ome_block(target: OmeTiffTarget, ranges: tuple[tuple[int, int], ...], out: np.ndarray) -> None:
    """Write a block as runs of frames that are contiguous in the file (one run when the block is)."""
    lead = out.shape[:-2]
    # the innermost axes that the block covers entirely form contiguous runs together with the next one
    k = len(lead)
    while k > 0 and ranges[k - 1][1] - ranges[k - 1][0] == target.shape[k - 1]:
        k -= 1
    run_axes = max(k - 1, 0)  # axes before run_axes are iterated; the rest is one contiguous run
    if target.has_p:
        run_axes = max(run_axes, 1)
    outer = [range(n) for n in lead[:run_axes]]
    for idx in itertools.product(*outer):
        sub = out[idx] if idx else out
        sub_ranges = tuple((ranges[i][0] + j, ranges[i][0] + j + 1) for i, j in enumerate(idx)) + ranges[len(idx):]
        target.write_block([slice(a, b) for a, b in sub_ranges], sub.reshape(tuple(b - a for a, b in sub_ranges) + out.shape[-2:]))


# ---------------------------------------------------------------------------------------------
# manifest (the resume marker)
# ---------------------------------------------------------------------------------------------
class Manifest:
    """``<out>/.livedenoise/<name>.json`` (what the run is) + ``<name>.done.jsonl`` (which blocks are finished)."""

    def __init__(self, out_dir: Path, stem: str) -> None:
        base = out_dir / STATE_DIR / stem
        self.path = base.with_name(base.name + ".json")
        self.log_path = base.with_name(base.name + ".done.jsonl")
        self.staging = base.with_name(base.name + ".blocks")
        self.assembling = base.with_name(base.name + ".assembling")
        #: the OME-TIFF (or OME-Zarr) being written: only a complete output ever carries the output's name
        self.partial = base.with_name(base.name + ".partial.ome.tif")
        self.partial_zarr = base.with_name(base.name + ".partial.ome.zarr")
        self.data: dict[str, Any] = {}

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict[str, Any]:
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LivedenoiseError(f"{self.path}: the resume record is unreadable ({exc}); start again with --overwrite.") from None
        if self.data.get("manifest_version") != MANIFEST_VERSION:
            raise LivedenoiseError(f"{self.path}: resume record of another livedenoise version; start again with --overwrite.")
        return self.data

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def done(self) -> dict[int, dict[str, Any]]:
        """Finished blocks (a torn last line from a crash is ignored)."""
        out: dict[int, dict[str, Any]] = {}
        if not self.log_path.is_file():
            return out
        for line in self.log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
                out[int(rec["block"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        return out

    def record(self, result: BlockResult) -> None:
        line = json.dumps({"block": result.index, "frames": result.frames, "clipped": result.clipped,
                           "seconds": round(result.seconds, 4), **({"check": result.check} if result.check else {}),
                           **({"input": result.input_digest} if result.input_digest else {})})
        with open(self.log_path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        forget_open_arrays(self.partial_zarr)
        for p in (self.path, self.log_path, self.staging, self.assembling, self.partial, self.partial_zarr):
            remove_path(p)


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
@dataclass
class ItemSummary:
    """One input's outcome."""

    input: str
    output: str
    format: str
    axes: str
    shape: tuple[int, ...]
    input_dtype: str
    output_dtype: str
    blocks: int
    block_shape: tuple[int, ...]
    block_bytes: int
    status: str = "planned"  # planned | done | already complete
    blocks_resumed: int = 0  # finished by an earlier run
    frames: int = 0  # denoised by this run
    pixels: int = 0
    clipped: int = 0  # whole output, earlier runs included
    seconds: float = 0.0
    noise_model: str = ""  # how the noise model was obtained, one line per channel


@dataclass
class BatchSummary:
    """What :func:`denoise_dataset` did (or, with ``dry_run``, would do)."""

    items: list[ItemSummary] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    output_dir: str = ""
    elapsed_s: float = 0.0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: inputs that could not be denoised in a multi-input batch: {"input": path, "error": one sentence}
    failed: list[dict[str, str]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(i.frames for i in self.items)

    @property
    def megapixels(self) -> float:
        return sum(i.pixels for i in self.items) / 1e6

    @property
    def mpx_per_s(self) -> float:
        busy = sum(i.seconds for i in self.items)
        return self.megapixels / busy if busy > 0 else 0.0

    @property
    def clipped(self) -> int:
        return sum(i.clipped for i in self.items)

    def report(self) -> str:
        lines = []
        model = "; ".join(dict.fromkeys(f"{m['name']} ({m.get('path') or 'in memory'}, sha256 {m['sha256'][:12]})"
                                        for m in self.models))
        if self.dry_run:
            lines.append(f"Dry run: nothing was written. Model: {model}.")
            lines += [f"  {n}" for n in self.notes]
            for it in self.items:
                lines.append(f"- {it.input}\n    {it.format}, axes {it.axes} {tuple(it.shape)}, {it.input_dtype} -> "
                             f"{it.output} ({it.output_dtype})\n    {it.blocks} block(s) of {tuple(it.block_shape)}, "
                             f"~{_format_bytes(it.block_bytes)} each; {it.status}"
                             + (f", {it.blocks_resumed} already done" if it.blocks_resumed else ""))
            lines += [f"FAILED: {f['input']}: {f['error']}" for f in self.failed]
            return "\n".join(lines)
        failed = {f["input"] for f in self.failed}
        for it in self.items:
            if it.input in failed:
                continue
            lines.append(f"{it.status}: {it.input} -> {it.output} ({it.frames} frames this run"
                         + (f", {it.blocks_resumed} of {it.blocks} blocks from an earlier run" if it.blocks_resumed else "")
                         + (f", {it.clipped} pixels clipped to {it.output_dtype}" if it.clipped else "") + ")"
                         + (f"\n    {it.noise_model}" if it.noise_model else ""))
        lines.append(f"Denoised {self.frames} frames ({self.megapixels:.1f} Mpx) in {self.elapsed_s:.1f} s, "
                     f"{self.mpx_per_s:.2f} Mpx/s while denoising, with {model}.")
        if self.adapted:
            lines.append("Adapted model(s) saved: " + ", ".join(self.adapted))
        lines.append(f"Output folder: {self.output_dir}")
        lines += [f"FAILED: {f['input']}: {f['error']}" for f in self.failed]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# execution
# ---------------------------------------------------------------------------------------------
class _Runner:
    """Bounded-concurrency execution of block jobs on threads or a dask.distributed client.

    At most ``in_flight`` blocks are submitted at a time, so neither memory nor the scheduler's
    queue grows with the dataset. On any error (including Ctrl-C or a callback raising) nothing
    new starts, running blocks finish (their results are still recorded), and the error is re-raised.
    """

    def __init__(self, client: Any | None, workers: int) -> None:
        self.client = client
        self.workers = workers
        self._pool: cf.ThreadPoolExecutor | None = None

    @property
    def concurrency(self) -> int:
        return self.workers

    def __enter__(self) -> "_Runner":
        if self.client is None:
            self._pool = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="livedenoise-block")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, job: BlockJob) -> Any:
        if self.client is not None:
            return self.client.submit(process_block, job, pure=False, key=f"livedenoise-block-{job.index}-{os.urandom(4).hex()}")
        assert self._pool is not None
        return self._pool.submit(process_block, job)

    def _wait(self, futures: set[Any]) -> tuple[set[Any], set[Any]]:
        if self.client is not None:
            from distributed import wait

            res = wait(list(futures), return_when="FIRST_COMPLETED")
            return set(res.done), set(res.not_done)
        done, not_done = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return set(done), set(not_done)

    def run(self, jobs: Iterator[BlockJob], on_done: Callable[[BlockResult], None],
            on_done_after_error: Callable[[BlockResult], None]) -> None:
        in_flight: set[Any] = set()
        limit = max(1, self.workers * (2 if self.client is not None else 1))
        jobs = iter(jobs)
        try:
            for job in itertools.islice(jobs, limit):
                in_flight.add(self._submit(job))
            while in_flight:
                done, in_flight = self._wait(in_flight)
                for fut in done:
                    result = fut.result()
                    on_done(result)
                    nxt = next(jobs, None)
                    if nxt is not None:
                        in_flight.add(self._submit(nxt))
        except BaseException:
            self._drain(in_flight, on_done_after_error)
            raise

    def _drain(self, in_flight: set[Any], record: Callable[[BlockResult], None]) -> None:
        for fut in in_flight:
            fut.cancel()
        for fut in in_flight:
            try:
                result = fut.result()
            except BaseException:  # cancelled or failed: it simply stays pending for --resume
                continue
            with contextlib.suppress(Exception):  # already failing: recording is best effort
                record(result)


def _connect(scheduler: Any) -> tuple[Any, int, int, bool]:
    """(client, total threads, threads per worker, whether we opened it) for an address or an existing Client."""
    from distributed import Client

    owned = False
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        owned = True
        try:
            client = Client(str(scheduler), timeout="10s")
        except Exception as exc:
            raise LivedenoiseError(f"Cannot connect to the dask scheduler at {scheduler!r} ({exc}); expected an address "
                                   "like tcp://host:8786 of a running dask.distributed scheduler.") from None
    nthreads = client.nthreads()
    if not nthreads:
        if owned:
            client.close()
        raise LivedenoiseError(f"The dask cluster at {scheduler!r} has no workers.")
    return client, int(sum(nthreads.values())), int(max(nthreads.values())), owned


# ---------------------------------------------------------------------------------------------
# adaptation
# ---------------------------------------------------------------------------------------------
def _sample_frames(datasets: Sequence[ImageDataset], count: int, channel: int | None, seed: int) -> list[np.ndarray]:
    """``count`` frames spread evenly over all inputs (one channel only when ``channel`` is given)."""
    rng = np.random.default_rng(seed)
    per = [max(1, count // len(datasets))] * len(datasets)
    frames = []
    for ds, n in zip(datasets, per):
        lead = list(ds.shape[:-2])
        c_axis = ds.axes.index("C") if "C" in ds.axes[:-2] else None
        if channel is not None and c_axis is not None:
            if channel >= lead[c_axis]:
                continue
            lead[c_axis] = 1
        total = int(np.prod(lead, dtype=np.int64))
        picks = np.unique(np.linspace(0, total - 1, num=min(n, total)).round().astype(np.int64))
        if len(picks) < min(n, total):  # pragma: no cover - linspace rounding collisions
            picks = np.sort(rng.choice(total, size=min(n, total), replace=False))
        for flat in picks:
            index = list(np.unravel_index(int(flat), lead)) if lead else []
            if channel is not None and c_axis is not None:
                index[c_axis] = channel
            frames.append(np.asarray(ds.read_frame(index)))
    if not frames:
        raise InputDataError(f"No frames{' of channel ' + str(channel) if channel is not None else ''} to adapt the model on.")
    return frames


@dataclass
class _Adaptation:
    """What ``--adapt`` produced: the models to denoise with (one per channel), the adapted ones saved, the fits."""

    refs: list[ModelRef] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    fits: list[dict[str, Any]] = field(default_factory=list)


def _adapt_models(base: Any, datasets: Sequence[ImageDataset], mode: str, pairs_dir: str | None, per_channel: bool,
                  out_dir: Path, *, time_budget_s: float, n_frames: int, seed: int, device: str, resume: bool,
                  overwrite: bool, dry_run: bool, notes: list[str], warnings: list[str], status: Callable[[str], Any],
                  show_progress: bool = False) -> _Adaptation:
    """Fine-tune the base model (one per channel with ``per_channel``) and save it into ``out_dir``.

    Saved models are part of the output: with ``resume`` an existing one is reused (re-training
    would give another model and break the resume check), otherwise it must not exist yet.

    A fit that ran 0 steps or kept the base model's weights (no held-out improvement) is not an
    adapted model: nothing is saved, the base model (with the noise model fitted to the data, as
    without ``--adapt``) denoises that channel, and one warning line says so; saving it under the
    adapted model's name would present the unchanged backbone as a fine-tuned one.
    """
    from livedenoise.checkpoint import Checkpoint, load_checkpoint

    channels: list[int | None] = [None]
    if per_channel:
        sizes = {ds.size("C") for ds in datasets}
        if max(sizes) <= 1:
            raise InputDataError("--per-channel needs inputs with a C (channel) axis; none of the inputs has several channels.")
        channels = list(range(max(sizes)))
    if mode == "pairs" and per_channel:
        raise ConfigError("--per-channel adapts one model per channel from the data itself; use it with --adapt self.")
    out = _Adaptation()
    refs = out.refs
    for ch in channels:
        suffix = f"-c{ch}" if ch is not None else ""
        path = out_dir / f"livedenoise-adapted-{mode}{suffix}.safetensors"
        if path.exists() and resume and not overwrite:
            notes.append(f"reusing adapted model {path}")
            refs.append(resolve_model(path, channel=ch))
            out.saved.append(str(path))
            continue
        if path.exists() and not overwrite and not dry_run:
            raise LivedenoiseError(f"{path} already exists; pass --resume to reuse it or --overwrite to adapt again.")
        if dry_run:
            notes.append(f"would fine-tune ({mode}) for up to {time_budget_s:.0f} s"
                         + (f" on channel {ch}" if ch is not None else "") + f" and save {path}")
            continue
        backbone = base if isinstance(base, Checkpoint) else None
        if backbone is None or backbone.path is not None:
            ref = resolve_model(base)
            if ref.path is None:
                raise ConfigError("--adapt needs a checkpoint (shipped name or .safetensors path) as the starting model.")
            from livedenoise.modelspec import model_file

            backbone = load_checkpoint(model_file(ref.path), device="cpu")
        from livedenoise.training.finetune import finetune

        if mode == "self":
            noisy = _sample_frames(datasets, n_frames, ch, seed)
            clean = None
            what = f"{len(noisy)} frames" + (f" of channel {ch}" if ch is not None else "")
        else:
            from livedenoise.training.pairs import load_pair_folder

            pairs = load_pair_folder(pairs_dir)  # type: ignore[arg-type]
            noisy, clean = [p.noisy for p in pairs], [p.clean for p in pairs]
            what = f"{len(pairs)} pairs from {pairs_dir}"
        text = f"fine-tuning {backbone.name} ({mode}) on {what}, up to {time_budget_s:.0f} s"
        status(text)
        with _fit_progress(show_progress, text) as callback:
            result = finetune(backbone, noisy, clean, time_budget_s=time_budget_s, seed=seed, device=device,
                              name=f"{backbone.name}+{mode}{suffix}", progress=callback)
        f = result.fit
        out.fits.append({"channel": ch, "steps": f.steps, "best_step": f.best_step, "stopped": f.stopped,
                         "adapted": result.adapted, "initial_val_loss": f.initial_val_loss,
                         "best_val_loss": f.best_val_loss})
        if not result.adapted:
            hint = "" if f.stopped == "skipped" else "; give a larger --adapt-time to adapt"
            msg = (f"--adapt {mode}{f' (channel {ch})' if ch is not None else ''}: not adapted ({f.not_adapted_reason()}); "
                   f"denoised with the base model {backbone.name} instead, nothing saved{hint}")
            log.warning("%s", msg)
            warnings.append(msg)
            refs.append(resolve_model(base, channel=ch))
            continue
        ckpt: Checkpoint = result.checkpoint
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save(path)
        log.info("Adapted model saved to %s (%d steps, weights of step %d)", path, f.steps, f.best_step)
        refs.append(resolve_model(path, channel=ch))
        out.saved.append(str(path))
    return out


def _fit_progress(show: bool, text: str) -> Any:
    """The fine-tuning progress bar shared with `livedenoise finetune` (or no display)."""
    if not show:
        return contextlib.nullcontext(None)
    from livedenoise.training.progress import fit_progress

    return fit_progress(text)


# ---------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------
@dataclass
class _Item:
    item: InputItem
    dataset: ImageDataset
    output: Path
    manifest: Manifest
    plan: BlockPlan | None = None
    summary: ItemSummary | None = None
    refs: list[ModelRef] | None = None  # the models with the noise model fitted to this item (per channel)
    preflight: dict[str, Any] | None = None  # residual check on the noise-fit frames, before any output


def _output_dtype(policy: str, in_dtype: np.dtype) -> np.dtype:
    if policy == "float32":
        return np.dtype(np.float32)
    if policy == "input":
        return np.dtype(in_dtype)
    return np.dtype(policy)


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _check_paths(items: list[_Item], out_dir: Path, inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Never write into an input (file or folder), never let two inputs share an output."""
    out_res = out_dir.resolve()
    folders = [Path(p).resolve() for p in inputs if Path(p).is_dir()] + \
              [it.item.path.resolve() for it in items if it.item.path.is_dir()]
    for folder in folders:
        if _is_within(out_res, folder):
            raise InputDataError(f"Output folder {out_dir} lies inside the input {folder}; choose an output "
                                 "folder outside the data so the input is never modified.")
        for it in items:
            if _is_within(it.output.resolve(), folder):
                raise InputDataError(f"Output {it.output} would lie inside the input {folder}; choose an output "
                                     "folder outside the data so the input is never modified.")
    seen: dict[Path, Path] = {}
    for it in items:
        src = it.item.path.resolve()
        out = it.output.resolve()
        if out == src or _is_within(src, out):
            raise InputDataError(f"The output for {it.item.path} would be {it.output}, the input itself; choose another "
                                 "output folder (-o).")
        if out in seen:
            raise InputDataError(f"Inputs {seen[out]} and {it.item.path} would both be written to {it.output}; "
                                 "rename one or process them separately.")
        seen[out] = it.item.path


def _provenance(it: _Item, models: list[ModelRef], adapt_info: dict[str, Any] | None, out_dtype: np.dtype,
                policy: str, fmt: str) -> dict[str, Any]:
    ds = it.dataset
    model_desc: Any = [m.describe() for m in models] if len(models) > 1 else models[0].describe()
    prov = {
        "software": "livedenoise",
        "livedenoise_version": __version__,
        "date": _now(),
        "model": model_desc,
        "input": {"path": str(ds.path.resolve()), "format": ds.format, "axes": ds.axes, "shape": list(ds.shape),
                  "dtype": ds.dtype.name},
        "axes": ds.axes,
        "shape": list(ds.shape),
        "output_dtype": out_dtype.name,
        "dtype_policy": policy,
        "format": fmt,
        "ensemble": it.plan.denoiser.ensemble if it.plan is not None else 1,
        "precision": it.plan.denoiser.precision if it.plan is not None else "",
    }
    if adapt_info:
        prov["adapted"] = adapt_info
    if ds.metadata.get("description"):
        prov["source_description"] = ds.metadata["description"]
    if ds.metadata.get("imagej"):
        prov["source_imagej"] = ds.metadata["imagej"]
    if ds.metadata.get("provenance"):
        prov["previous"] = ds.metadata["provenance"]
    return prov


def denoise_dataset(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    model: Any = None,
    adapt: str | tuple[str, str] | None = None,
    axes: str | None = None,
    dtype: str = "float32",
    fmt: str = "ome-tiff",
    resume: bool = False,
    overwrite: bool = False,
    memory_budget: str | int = "1GB",
    scheduler: Any = None,
    dry_run: bool = False,
    progress: bool = True,
    per_channel: bool = False,
    pairs: str | os.PathLike[str] | None = None,
    adapt_time_s: float = 60.0,
    adapt_frames: int = 8,
    device: str = "auto",
    workers: int | None = None,
    seed: int = 0,
    on_block_done: Callable[[BlockResult], None] | None = None,
    calibration: str | os.PathLike[str] | None = None,
    frames_averaged: int = 1,
    strict: bool = False,
    noise_model: str = "fit",
    ensemble: int = 1,
    precision: str = "auto",
) -> BatchSummary:
    """Denoise saved datasets into ``output_dir``; the Python twin of ``livedenoise denoise``.

    ``inputs``: TIFF / OME-TIFF files, folders of them, NDTiff dataset folders. ``model``:
    ``"standard"``/``"fast"``, a checkpoint path, a Checkpoint (or a list / dict of them, one
    per channel; ``None``: :data:`livedenoise.checkpoint.DEFAULT_BACKBONE`). ``adapt``: ``None``, ``"self"`` (Noise2Self on a sample of the data) or
    ``"pairs"`` with ``pairs=DIR`` (or ``("pairs", DIR)``). ``dtype``: ``"float32"``,
    ``"input"`` (rounded and clipped to the input type), ``"uint16"``, ``"uint8"``. ``fmt``:
    ``"ome-tiff"``, ``"ome-zarr"`` (OME-NGFF 0.5; positions as a bioformats2raw layout; see
    :mod:`livedenoise.io_omezarr`) or ``"ndtiff"`` (integer dtypes only). ``memory_budget``: bytes or text such
    as ``"512MB"`` -- for the whole local job, or per worker with ``scheduler`` (a
    dask.distributed address or Client). ``workers``: local threads (default 2).
    ``on_block_done`` is called after each finished block (raise in it to stop the run).

    Noise model: for every input and channel a normaliser is fitted to the data itself
    (:mod:`livedenoise.dataset_noise`; from temporal differences when there is a time axis), or
    taken from ``calibration`` (a ``livedenoise calibrate-camera`` file; per-pixel maps when the
    frames have the calibrated size); ``frames_averaged`` says each frame is the mean of that many
    acquisitions. The model's stored normaliser only sets the scale. Before any output is written
    the fitted model is checked on a sample frame (:mod:`livedenoise.residual_check`): a failed
    check is a warning in the summary and the provenance, or an error with ``strict``. Frames whose
    signal is far above the backbone's training range are copied unchanged (with a warning).
    ``noise_model="stored"`` skips all of this and uses each model's stored normaliser as it is
    (for a model trained on exactly this camera and light level). ``ensemble`` (1, 2, 4 or 8)
    averages the network over that many flips/rotations of every frame: better quality at that many
    times the compute (see :class:`~livedenoise.inference.Denoiser`); a resumed job keeps the value it
    started with. ``precision``: ``"auto"`` (fp16 on CUDA, fp32 elsewhere), ``"fp32"``, ``"bf16"`` (on a CPU
    with native bfloat16 1.7-1.9x faster than fp32, at a measured quality cost: see the README) or
    ``"fp16"``; a resumed job must ask for the one it started with.
    """
    with _connection(scheduler, dry_run) as connection:
        t_start = time.perf_counter()
        out_dir = Path(output_dir)
        fmt = {"ome": "ome-tiff", "ome-tif": "ome-tiff", "tiff": "ome-tiff", "zarr": "ome-zarr", "omezarr": "ome-zarr",
               "ome.zarr": "ome-zarr"}.get(str(fmt).lower(), str(fmt).lower())
        if fmt not in FORMATS:
            raise ConfigError(f"Output format {fmt!r} is unknown; expected one of {', '.join(FORMATS)}.")
        if dtype not in DTYPES:
            raise ConfigError(f"Output dtype {dtype!r} is unknown; expected one of {', '.join(DTYPES)}.")
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; choose one.")
        if noise_model not in NOISE_MODELS:
            raise ConfigError(f"--noise-model {noise_model!r} is unknown; expected one of {', '.join(NOISE_MODELS)}.")
        if noise_model == "stored" and (calibration is not None or frames_averaged != 1):
            raise ConfigError("--noise-model stored uses the model's own normaliser; --calibration and --frames-averaged "
                              "need --noise-model fit.")
        from livedenoise.device import select_device
        from livedenoise.inference import ENSEMBLES, canonical_precision, effective_precision

        if ensemble not in ENSEMBLES:
            raise ConfigError(f"--ensemble {ensemble!r} is invalid; expected one of {', '.join(map(str, ENSEMBLES))}.")
        canonical_precision(precision)  # a wrong value fails before the device is looked at
        # what runs, recorded and compared on --resume ("auto" is fp16 on CUDA, fp32 elsewhere: a job started on a
        # CPU and resumed on a GPU must not mix the two)
        device_type = select_device(device).type
        precision = effective_precision(precision, device_type)
        precision_of_auto = effective_precision("auto", device_type)
        if int(frames_averaged) != frames_averaged or frames_averaged < 1:
            raise ConfigError(f"--frames-averaged {frames_averaged!r} is invalid; expected an integer >= 1.")
        if isinstance(adapt, (tuple, list)):
            adapt, pairs = adapt[0], adapt[1] if len(adapt) > 1 else pairs
        if adapt not in (None, "self", "pairs"):
            raise ConfigError(f"--adapt {adapt!r} is unknown; expected 'self' or 'pairs DIR'.")
        if adapt == "pairs" and not pairs:
            raise ConfigError("--adapt pairs needs the folder of pairs: --adapt pairs DIR.")
        if per_channel and adapt is None and not isinstance(model, (list, tuple, dict)):
            raise ConfigError("--per-channel needs --adapt self (one model adapted per channel) or one model per channel.")
        budget = parse_memory(memory_budget)
        if axes is not None:
            axes = validate_axes(axes)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputDataError(f"Output {out_dir} exists and is not a folder.")
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        summary = BatchSummary(output_dir=str(out_dir), dry_run=dry_run)

        # -- 1. inputs (metadata only) and output names ------------------------------------------
        items: list[_Item] = []
        expanded = expand_inputs(inputs)
        multi = len(expanded) > 1  # one bad file must not stop a folder: it is named and skipped
        for item in expanded:
            try:
                ds = open_dataset(item.path, axes=axes if item.path.is_file() else None)
            except InputDataError as exc:
                if not multi:
                    raise
                _skip_input(summary, item.path, exc)
                continue
            suffix = {"ome-tiff": ".ome.tif", "ome-zarr": ".ome.zarr"}.get(fmt, "")
            items.append(_Item(item, ds, out_dir / (item.output_stem + suffix), Manifest(out_dir, item.output_stem)))
        _check_paths(items, out_dir, inputs)
        if model is None:
            model = default_model_for([it.dataset for it in items])
        policies = {it.item.path: _output_dtype(dtype, it.dataset.dtype) for it in items}
        for it in items:
            out_dtype = policies[it.item.path]
            if fmt == "ndtiff" and out_dtype not in (np.uint8, np.uint16):
                raise ConfigError(f"NDTiff stores only uint8 / uint16 pixels but the output for {it.item.path} would be "
                                  f"{out_dtype}; pass --dtype input (for uint8/uint16 data) or --dtype uint16.")
            if out_dtype.kind not in "uif":
                raise ConfigError(f"Output dtype {out_dtype} is not supported.")
            exists = it.output.exists() or it.manifest.exists()
            if exists and not (resume or overwrite or dry_run):
                raise LivedenoiseError(f"{it.output} already exists; pass --resume to continue an interrupted run or "
                                       "--overwrite to replace it.")
            if resume and it.output.exists() and not it.manifest.exists():
                raise LivedenoiseError(f"{it.output} exists but has no resume record (it was not left by an interrupted "
                                       "livedenoise run); pass --overwrite to replace it.")
        if not dry_run:
            _check_output_space(out_dir, [(it.dataset, policies[it.item.path]) for it in items
                                          if not (resume and it.manifest.exists())])  # resumed: already allocated

        # -- 2. models ---------------------------------------------------------------------------
        client, concurrency, per_worker = None, workers or 2, 1
        if connection is not None:
            client, concurrency, per_worker, _ = connection
        console = _console() if progress else None
        notes: list[str] = []
        adapt_info = None
        base_ref = None
        if adapt is not None:
            base_ref = resolve_model(model)  # validates the starting model before any training
            n_models = 1
            if per_channel:
                n_models = max(it.dataset.size("C") for it in items)
                if n_models <= 1:
                    raise InputDataError("--per-channel needs inputs with a C (channel) axis; none of the inputs has "
                                         "several channels.")
                if adapt == "pairs":
                    raise ConfigError("--per-channel adapts one model per channel from the data itself; use it with --adapt self.")
            refs = [ModelRef(**{**asdict(base_ref), "channel": c if n_models > 1 else None}) for c in range(n_models)]
        elif isinstance(model, dict):
            refs = [resolve_model(model[k], channel=int(k)) for k in sorted(model)]
        elif isinstance(model, (list, tuple)) and not (len(model) == 2 and hasattr(model[0], "state_dict")):
            refs = [resolve_model(m, channel=i) for i, m in enumerate(model)]
        else:
            refs = [resolve_model(model)]
        if len(refs) > 1:
            for it in items:
                if it.dataset.size("C") != len(refs):
                    raise InputDataError(f"{it.item.path} has {it.dataset.size('C')} channel(s) but {len(refs)} per-channel "
                                         "models are used; expected one model per channel.")
        if client is not None:
            for r in refs:
                if r.path is None:
                    raise ConfigError(f"Model {r.name!r} has no checkpoint file; dask workers load models from a path, "
                                      "so save it first (Checkpoint.save) and pass the path.")
        temporal = any(r.temporal for r in refs)
        if temporal:
            _check_time_axes(items, refs)

        # -- 3. plans ----------------------------------------------------------------------------
        local_budget = budget if client is None else budget * concurrency // max(1, per_worker)
        for it in items:
            ds = it.dataset
            out_dtype = policies[it.item.path]
            split = ("C" if (len(refs) > 1 or ds.size("C") > 1) else "") + ("P" if ds.axes.startswith("P") else "")
            whole = "T" if temporal and "T" in ds.axes else ""
            weights = 3 * sum(r.weights_bytes for r in refs)  # file + loaded checkpoint + the Denoiser's own copy
            plan = plan_blocks(ds.shape, ds.axes, ds.dtype, out_dtype, local_budget, concurrency=concurrency,
                               split_axes=split, whole_axes=whole, first_width=max(r.first_width for r in refs),
                               margin=max(r.margin for r in refs),
                               weights_bytes=weights, window=5 if temporal else 1, device=device, ensemble=ensemble,
                               precision=precision)
            resumed = clipped = 0
            status_text = "planned"
            if (it.output.exists() or it.manifest.exists()) and not (resume or overwrite):
                status_text = "output exists: needs --resume or --overwrite"
            elif it.output.exists() and overwrite:
                status_text = "planned (replaces the existing output)"
            if it.manifest.exists() and resume:
                data = it.manifest.load()
                if data.get("state") == "complete":
                    status_text = "already complete"
                    clipped = int((data.get("summary") or {}).get("clipped", 0))
                # a job started before precisions were recorded ran the default, "auto", on this kind of device
                for option, default, asked in (("ensemble", 1, ensemble), ("precision", precision_of_auto, precision)):
                    recorded = data["plan"]["denoiser"].get(option, default)
                    if recorded != asked:  # a block-wise mix of two settings would be one output of neither
                        raise LivedenoiseError(
                            f"Cannot resume {it.output}: the interrupted run used --{option} {recorded}, this one asks "
                            f"for {asked}; resume with --{option} {recorded} or pass --overwrite to start again.")
                plan = BlockPlan(ds.axes, ds.shape, tuple(data["plan"]["chunks"]), int(data["plan"]["bytes_per_block"]),
                                 DenoiserOptions(**data["plan"]["denoiser"]))
                resumed = len(it.manifest.done())
            it.plan = plan
            it.summary = ItemSummary(str(it.item.path), str(it.output), ds.format, ds.axes, tuple(ds.shape), ds.dtype.name,
                                     out_dtype.name, plan.n_blocks, plan.block_shape, plan.bytes_per_block,
                                     status=status_text, blocks_resumed=resumed, clipped=clipped)
            summary.items.append(it.summary)
        # -- 4. adaptation (after planning: a plan that cannot work fails before minutes of training) ----
        if adapt is not None:
            assert base_ref is not None
            status = (lambda text: console.print(f"[cyan]{text}[/]")) if console else (lambda text: log.info(text))
            adapted = _adapt_models(model, [it.dataset for it in items], adapt, str(pairs) if pairs else None, per_channel,
                                    out_dir, time_budget_s=adapt_time_s, n_frames=adapt_frames, seed=seed, device=device,
                                    resume=resume, overwrite=overwrite, dry_run=dry_run, notes=notes,
                                    warnings=summary.warnings, status=status, show_progress=console is not None)
            if not dry_run:
                refs = adapted.refs
                summary.adapted = list(adapted.saved)
            adapt_info = {"mode": adapt, "base": base_ref.describe(), "per_channel": per_channel,
                          **({"pairs": str(pairs)} if adapt == "pairs" else {"frames": adapt_frames}),
                          "time_budget_s": adapt_time_s, "saved": list(adapted.saved), "fits": adapted.fits}
        summary.models = [r.describe() for r in refs]
        summary.notes = notes
        if dry_run:
            notes.append("the noise model is fitted to each input and channel when the run starts"
                         + (f" (camera calibration {calibration})" if calibration else ""))
            summary.elapsed_s = time.perf_counter() - t_start
            return summary
        # -- 4b. noise model per input and channel, checked before any output exists ---------------
        cal_obj = None
        if calibration is not None:
            from livedenoise.calibration import CameraCalibration

            cal_obj = CameraCalibration.load(calibration)
        for it in list(items):
            if noise_model == "stored" or (it.summary is not None and it.summary.status == "already complete"):
                continue
            try:
                it.refs = _fit_item_refs(it, refs, calibration=cal_obj, calibration_path=calibration,
                                         averaged=frames_averaged, strict=strict, summary=summary)
            except InputDataError as exc:
                if not multi:
                    raise
                _skip_input(summary, it.item.path, exc, it)
                items.remove(it)
                it.dataset.close()
        summary.models = [r.describe() for it in items for r in (it.refs or refs)][:16]
        if items:
            # load once here, as the workers will: a corrupt checkpoint fails before any output exists
            for r in refs:
                if r.noise_json is None:
                    get_denoiser(r, items[0].plan.denoiser)  # type: ignore[union-attr]

        # -- 5. run ------------------------------------------------------------------------------
        t_axis_of = lambda ds: ds.axes.index("T") if (temporal and "T" in ds.axes[:-2]) else None  # noqa: E731
        opened: list[tuple[SourceSpec, tuple[int, int]]] = []
        try:
            _run_items(items, refs, policies, adapt_info, dtype, fmt, overwrite, resume, console, client, concurrency,
                       t_axis_of, opened, on_block_done, summary, keep_going=multi)
        finally:
            with _DATASETS_LOCK:
                for key in opened:
                    _DATASETS.pop(key, None)
            for it in items:
                it.dataset.close()
        summary.elapsed_s = time.perf_counter() - t_start
        if summary.failed:
            n = len(expanded)
            listed = "; ".join(f"{f['input']}: {f['error']}" for f in summary.failed[:5])
            more = f"; and {len(summary.failed) - 5} more" if len(summary.failed) > 5 else ""
            raise BatchIncomplete(
                f"{len(summary.failed)} of {n} inputs could not be denoised ({listed}{more}); the other "
                f"{n - len(summary.failed)} were written to {out_dir}.", summary)
        return summary


def _run_items(items: list[_Item], refs: list[ModelRef], policies: dict[Path, np.dtype], adapt_info: dict[str, Any] | None,
               dtype: str, fmt: str, overwrite: bool, resume: bool, console: Any, client: Any, concurrency: int,
               t_axis_of: Callable[[ImageDataset], int | None], opened: list[tuple[SourceSpec, tuple[int, int]]],
               on_block_done: Callable[[BlockResult], None] | None, summary: BatchSummary, *,
               keep_going: bool = False) -> None:
    """Process every item in turn (outputs, blocks, finalisation).

    ``keep_going``: an input that fails (a NaN frame, a truncated plane) is named in ``summary.failed``
    and the next one is processed; its finished blocks stay resumable. Interrupts always stop the batch.
    """
    with _Progress(console, items) as bar, _Runner(client, concurrency) as runner:
        for n, it in enumerate(items):
            assert it.plan is not None and it.summary is not None
            if it.summary.status == "already complete":
                continue
            try:
                _run_item(n, it, refs, policies, adapt_info, dtype, fmt, overwrite, resume, bar, runner, t_axis_of,
                          opened, on_block_done, summary)
            except (InputDataError, OSError) as exc:
                if not keep_going:
                    # one sentence that names the file (a NaN frame's message alone does not)
                    raise InputDataError(f"{it.item.path}: {_failure_text(it.item.path, exc)}") from None
                _skip_input(summary, it.item.path, exc, it)


def _failure_text(path: Path, exc: BaseException) -> str:
    """The reason an input failed, without repeating its path: our sentence, or the OS error's."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}; the finished blocks are kept for --resume"
    return str(exc).replace(f"{path}: ", "")


def _skip_input(summary: BatchSummary, path: Path, exc: BaseException, it: _Item | None = None) -> None:
    """Record an input that could not be denoised (named, with its one-sentence reason) and log it."""
    text = _failure_text(path, exc)
    summary.failed.append({"input": str(path), "error": text})
    if it is not None and it.summary is not None:
        it.summary.status = "failed"
    if it is not None and it.manifest.exists():
        try:  # finished blocks stay resumable; a repaired input starts again (see _prepare_output)
            it.manifest.load()
            it.manifest.data["state"] = "failed"
            it.manifest.data["error"] = text
            it.manifest.save()
        except (LivedenoiseError, OSError):
            pass
    log.error("%s: %s (skipped; the other inputs go on)", path, text.rstrip("."))


def _run_item(n: int, it: _Item, refs: list[ModelRef], policies: dict[Path, np.dtype], adapt_info: dict[str, Any] | None,
              dtype: str, fmt: str, overwrite: bool, resume: bool, bar: "_Progress", runner: "_Runner",
              t_axis_of: Callable[[ImageDataset], int | None], opened: list[tuple[SourceSpec, tuple[int, int]]],
              on_block_done: Callable[[BlockResult], None] | None, summary: BatchSummary) -> None:
    """One input: output prepared (or resumed), every unfinished block denoised, output finalised."""
    assert it.plan is not None and it.summary is not None
    out_dtype = policies[it.item.path]
    item_refs = it.refs or refs
    prov = _provenance(it, item_refs, adapt_info, out_dtype, dtype, fmt)
    target = _prepare_output(it, item_refs, prov, out_dtype, fmt, overwrite=overwrite, resume=resume)
    stamp = source_stamp(it.dataset.spec.path)
    with _DATASETS_LOCK:
        _DATASETS[(it.dataset.spec, stamp)] = it.dataset
        opened.append((it.dataset.spec, stamp))
    done = it.manifest.done()
    _verify_resumed_input(it, done)
    it.summary.blocks_resumed = len(done)
    clipped = [sum(int(r.get("clipped", 0)) for r in done.values())]
    c_axis = it.dataset.axes.index("C") if (len(item_refs) > 1 and "C" in it.dataset.axes) else None
    jobs = (BlockJob(i, rng, it.dataset.spec, tuple(item_refs), c_axis, t_axis_of(it.dataset), it.plan.denoiser,
                     out_dtype.str, target, stamp) for i, rng in it.plan.blocks() if i not in done)
    bar.start_item(n, len(done))
    t0 = time.perf_counter()

    def on_done(result: BlockResult, it: _Item = it, n: int = n, clipped: list[int] = clipped) -> None:
        it.manifest.record(result)
        assert it.summary is not None
        it.summary.frames += result.frames
        it.summary.pixels += result.pixels
        clipped[0] += result.clipped
        bar.advance(n, result)
        if on_block_done is not None:
            on_block_done(result)

    def after_error(result: BlockResult, it: _Item = it) -> None:
        it.manifest.record(result)

    runner.run(jobs, on_done, after_error)
    it.summary.seconds = time.perf_counter() - t0  # wall time: throughput includes I/O
    it.summary.clipped = clipped[0]
    prov["quality_check"] = _combined_check(it, summary)
    _finalize(it, prov, fmt, out_dtype)
    it.summary.status = "done"
    if it.summary.clipped:
        total = int(np.prod(it.dataset.shape, dtype=np.int64))
        msg = (f"{it.output}: {it.summary.clipped} of {total} pixels ({100 * it.summary.clipped / total:.3g}%) were "
               f"outside the {out_dtype.name} range and were clipped; use --dtype float32 to keep them.")
        log.warning(msg)
        summary.warnings.append(msg)


def _fit_item_refs(it: _Item, refs: list[ModelRef], *, calibration: Any, calibration_path: Any, averaged: int,
                   strict: bool, summary: BatchSummary) -> list[ModelRef]:
    """One ref per channel of ``it`` with the noise model fitted to that channel, checked on a sample frame."""
    from livedenoise.dataset_noise import fit_dataset_noise
    from livedenoise.normalization import Normalizer
    from livedenoise.residual_check import check_residual

    ds = it.dataset
    n_c = ds.size("C")
    channels: list[int | None] = list(range(n_c)) if n_c > 1 else [None]
    out: list[ModelRef] = []
    checks: list[dict[str, Any]] = []
    for ch in channels:
        base = refs[ch] if (len(refs) > 1 and ch is not None) else refs[0]
        stored = json.loads(base.normalizer_json or "{}")
        if not stored:  # a bare in-process model without a normaliser: nothing to fit against
            out.append(base)
            continue
        where = f"{it.item.path}" + (f" channel {ch}" if ch is not None else "")
        fit, frames = fit_dataset_noise(ds, ch, Normalizer.from_dict(stored), calibration=calibration, averaged=averaged)
        for w in fit.warnings:
            msg = f"{where}: {w}"
            if msg not in summary.warnings:
                summary.warnings.append(msg)
        ref = ModelRef(**{**asdict(base), "channel": ch if ch is not None else base.channel,
                          "noise_json": json.dumps(fit.to_dict(), sort_keys=True),
                          "calibration": str(Path(calibration_path).resolve()) if fit.normalizer.has_pixel_maps else None,
                          "passthrough": not fit.in_range})
        line = fit.describe() + (f" [channel {ch}]" if ch is not None else "")
        if it.summary is not None:
            it.summary.noise_model = "; ".join(filter(None, [it.summary.noise_model, line]))
        if ref.passthrough:
            summary.warnings.append(f"{where}: copied unchanged instead of denoised (signal above the backbone's range)")
        else:
            denoiser = get_denoiser(ref, it.plan.denoiser)  # type: ignore[union-attr]
            den = _model_thread().submit(denoiser.denoise, frames[0]).result()
            check = check_residual(frames[0], den, denoiser.normalizer)
            checks.append({"channel": ch, **check.to_dict()})
            if not check.ok:
                msg = f"{where}: {check.message}"
                if strict:
                    raise LivedenoiseError(f"{msg}. Refusing to denoise (--strict); give a camera calibration "
                                           "(--calibration) or run without --strict to write it with this warning.")
                log.warning(msg)
                summary.warnings.append(msg)
        out.append(ref)
    it.preflight = {"checks": checks}
    return out


def _combined_check(it: _Item, summary: BatchSummary) -> dict[str, Any] | None:
    """The residual checks of every block of ``it`` (and the pre-flight one) in one verdict for the provenance."""
    from livedenoise.residual_check import ResidualCheck

    records = [r["check"] for r in it.manifest.done().values() if r.get("check")]
    if not records:
        return it.preflight
    checks = [ResidualCheck(**{k: (float("nan") if v is None else v) for k, v in r.items() if k != "message"})
              for r in records]
    combined = ResidualCheck.combine(checks)
    bad = sum(1 for c in checks if not c.ok)
    out = {**combined.to_dict(), "blocks_checked": len(checks), "blocks_failed": bad,
           "preflight": (it.preflight or {}).get("checks")}
    if bad:
        msg = f"{it.output}: {bad} of {len(checks)} checked blocks failed the residual check: {combined.message}"
        if msg not in summary.warnings:
            log.warning(msg)
            summary.warnings.append(msg)
    return out


def _prepare_output(it: _Item, refs: list[ModelRef], prov: dict[str, Any], out_dtype: np.dtype, fmt: str, *,
                    overwrite: bool, resume: bool) -> OmeTiffTarget | OmeZarrTarget | NpyBlockTarget:
    """Create the output and its manifest, or check them against this run when resuming."""
    assert it.plan is not None
    ds = it.dataset
    m = it.manifest
    expected = {
        "input": ds.fingerprint(),
        "models": [{"name": r.name, "sha256": r.sha256, "channel": r.channel,
                    **({"normalizer": json.loads(r.noise_json)["normalizer"]} if r.noise_json else {})} for r in refs],
        "settings": {"dtype": out_dtype.name, "format": fmt, "axes": ds.axes, "shape": list(ds.shape)},
    }
    if resume and m.exists() and m.load().get("state") == "creating":
        overwrite = True  # stopped while the empty output was being created: nothing to keep
    if resume and m.exists() and m.load().get("state") == "failed" and m.data.get("input") != expected["input"]:
        overwrite = True  # the input that failed (a NaN frame, a bad plane) was repaired: start it again
    if resume and m.exists() and not overwrite:
        data = m.load()
        for key, what in (("input", "the input changed"), ("models", "the model differs"),
                          ("settings", "the output settings (dtype / format / axes) differ")):
            if data.get(key) != expected[key]:
                raise LivedenoiseError(
                    f"Cannot resume {it.output}: {what} since the interrupted run ({m.path} records "
                    f"{_short(data.get(key))}, now {_short(expected[key])}); pass --overwrite to start again."
                )
        if fmt == "ome-tiff":
            t = data["target"]
            target: OmeTiffTarget | OmeZarrTarget | NpyBlockTarget = OmeTiffTarget(
                t["path"], t["axes"], tuple(t["shape"]), t["dtype"], tuple(t["offsets"]))
            target.check()
        elif fmt == "ome-zarr":
            t = data["target"]
            target = OmeZarrTarget(t["path"], t["axes"], tuple(t["shape"]), t["dtype"], t.get("token", ""))
            target.check()
        else:
            target = NpyBlockTarget(str(m.staging), out_dtype.str)
            m.staging.mkdir(parents=True, exist_ok=True)
        return target
    if overwrite:
        # An earlier complete output stays until the new one replaces it (renamed over it when complete).
        m.remove()
    # the manifest comes first: from now on an interruption leaves a resumable state
    m.data = {"manifest_version": MANIFEST_VERSION, "state": "creating", "created": _now(), **expected,
              "output": str(it.output),
              "plan": {"chunks": list(it.plan.chunks), "bytes_per_block": it.plan.bytes_per_block,
                       "denoiser": asdict(it.plan.denoiser)}}
    m.save()
    try:
        it.output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "ome-tiff":
            target = create_ome_tiff(m.partial, ds, out_dtype, prov)
            m.data["target"] = {"path": target.path, "axes": target.axes, "shape": list(target.shape),
                                "dtype": target.dtype, "offsets": list(target.offsets)}
        elif fmt == "ome-zarr":
            remove_path(m.partial_zarr)
            target = create_ome_zarr(m.partial_zarr, ds, out_dtype, prov)
            m.data["target"] = {"path": target.path, "axes": target.axes, "shape": list(target.shape),
                                "dtype": target.dtype, "token": target.token}
        else:
            m.staging.mkdir(parents=True, exist_ok=True)
            target = NpyBlockTarget(str(m.staging), out_dtype.str)
        m.data["state"] = "running"
        m.save()
    except BaseException:
        remove_path(m.partial)  # nothing half-made stays behind without its resume record
        remove_path(m.partial_zarr)
        m.remove()
        raise
    return target


def _verify_resumed_input(it: _Item, done: dict[int, dict[str, Any]]) -> None:
    """Re-read the input of every block finished by the interrupted run and compare its digest; refuse on change."""
    assert it.plan is not None
    for i, ranges in it.plan.blocks():
        recorded = done.get(i, {}).get("input")
        if recorded is None:
            continue
        key = tuple(slice(a, b) for a, b in ranges) + (slice(None), slice(None))
        if block_digest(np.asarray(it.dataset.reader[key])) != recorded:
            raise LivedenoiseError(
                f"Cannot resume {it.output}: the input {it.item.path} changed since the interrupted run (the pixels of "
                f"block {i}, already denoised, differ); pass --overwrite to start again.")


def _check_output_space(out_dir: Path, outputs: list[tuple[ImageDataset, np.dtype]]) -> None:
    """The output folder is writable and has room for every output (sized from the inputs), before any model loads."""
    ensure_room(out_dir, sum(int(np.prod(ds.shape, dtype=np.int64)) * dt.itemsize for ds, dt in outputs))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _finalize(it: _Item, prov: dict[str, Any], fmt: str, out_dtype: np.dtype) -> None:
    """Final provenance; NDTiff assembly from the staged blocks; mark the manifest complete."""
    assert it.plan is not None and it.summary is not None
    m = it.manifest
    done = m.done()
    missing = [i for i in range(it.plan.n_blocks) if i not in done]
    if missing:
        raise LivedenoiseError(f"{it.output}: {len(missing)} block(s) were not written; rerun with --resume.")
    prov = {**prov, "completed": _now(), "clipped_pixels": it.summary.clipped}
    if fmt == "ome-tiff":
        update_ome_provenance(m.partial, prov)
        os.replace(m.partial, it.output)
    elif fmt == "ome-zarr":
        update_zarr_provenance(m.partial_zarr, prov)
        forget_open_arrays(m.partial_zarr)
        # a folder cannot be renamed over another: an earlier output steps aside first and goes only once the new
        # one carries the name (an interruption in between leaves both, never neither)
        old = m.partial_zarr.with_name(m.partial_zarr.name.replace(".partial.", ".previous."))
        remove_path(old)
        if it.output.exists():
            os.replace(it.output, old)
        os.replace(m.partial_zarr, it.output)
        remove_path(old)
    else:
        m.data["state"] = "assembling"
        m.save()
        remove_path(m.assembling)
        plan = it.plan
        staging = NpyBlockTarget(str(m.staging), out_dtype.str)

        def frames() -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
            for i, ranges in plan.blocks():
                block = np.load(staging.block_path(i), mmap_mode="r")
                for idx in itertools.product(*(range(a, b) for a, b in ranges)):
                    local = tuple(j - a for j, (a, _) in zip(idx, ranges))
                    yield idx, np.array(block[local])
                del block

        write_ndtiff(m.assembling, it.dataset, frames(), prov)
        remove_path(it.output)
        os.replace(m.assembling, it.output)
        remove_path(m.staging)
    m.data["state"] = "complete"
    m.data["completed"] = _now()
    m.data["summary"] = {"clipped": it.summary.clipped}
    m.save()


# ---------------------------------------------------------------------------------------------
# progress display
# ---------------------------------------------------------------------------------------------
def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class _Progress:
    """rich progress: one bar per input, blocks done / total, frames, Mpx/s and ETA."""

    def __init__(self, console: Any, items: list[_Item]) -> None:
        self.console = console
        self.items = items
        self.progress: Any = None
        self.tasks: dict[int, Any] = {}
        self.pixels: dict[int, int] = {}
        self.t0: dict[int, float] = {}

    def __enter__(self) -> "_Progress":
        if self.console is None:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("blocks"),
            TextColumn("{task.fields[frames]} frames"), TextColumn("{task.fields[rate]} Mpx/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
        )
        self.progress.__enter__()
        return self

    def start_item(self, n: int, already: int) -> None:
        if self.progress is None:
            return
        it = self.items[n]
        assert it.plan is not None
        name = it.item.path.name
        self.tasks[n] = self.progress.add_task(name if len(name) < 40 else "..." + name[-37:], total=it.plan.n_blocks,
                                               completed=already, frames=0, rate="-")
        self.pixels[n] = 0
        self.t0[n] = time.perf_counter()

    def advance(self, n: int, result: BlockResult) -> None:
        if self.progress is None:
            return
        self.pixels[n] += result.pixels
        rate = self.pixels[n] / 1e6 / max(1e-9, time.perf_counter() - self.t0[n])
        frames = self.items[n].summary.frames if self.items[n].summary else 0
        self.progress.update(self.tasks[n], advance=1, frames=frames, rate=f"{rate:.2f}")

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


__all__ = [
    "BatchSummary", "BlockJob", "BlockPlan", "BlockResult", "DenoiserOptions", "ItemSummary", "Manifest", "ModelRef",
    "cast_output", "denoise_block", "denoise_dataset", "get_denoiser", "parse_memory", "plan_blocks", "process_block",
    "resolve_model",
]
