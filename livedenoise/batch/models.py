"""Which model a batch job runs and how every worker loads it: resolution, per-process caches (bounded)."""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from livedenoise.errors import CheckpointError, ConfigError, InputDataError, LivedenoiseError
from livedenoise.io import (
    ImageDataset,
)
from livedenoise.weights import TEMPORAL_BACKBONE


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
    #: Frames a temporal network sees around each frame's own (its ``window``); 1 for a 2-D network.
    window: int = 1
    margin: int = 0  # tile context the Denoiser adds on each side (receptive-field radius on the alignment grid)
    #: The noise model fitted to the data this ref denoises (NoiseFit.to_dict() as JSON); replaces the stored
    #: normaliser.
    noise_json: str | None = None
    #: Camera calibration file whose per-pixel maps the fitted normaliser uses (None: scalars only).
    calibration: str | None = None
    #: Frames outside the backbone's range are copied unchanged instead of denoised.
    passthrough: bool = False

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "path": self.path, "sha256": self.sha256, "arch": self.arch,
               "normalizer": json.loads(self.normalizer_json),
               **({"channel": self.channel} if self.channel is not None else {})}
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
            from livedenoise.camera_calibration import CameraCalibration

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
        return int(next(iter(kwargs["widths"])))
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


def _window(meta: dict[str, Any]) -> int:
    """A temporal checkpoint's window (frames per prediction) from its metadata: the fused network's architecture
    argument, else the window a CNNT was trained on (as :class:`~livedenoise.inference.Denoiser` reads it); 5, every
    shipped temporal network's, where neither says."""
    window = (meta.get("arch_kwargs") or {}).get("window") or (meta.get("training") or {}).get("window") or 5
    return max(1, int(window))


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


def _stored_normalizer_json(network: Any, normalizer: Any) -> str:
    """The normaliser a job fits the data's noise model from; none (``{}``) for a network without one, or for a
    Model Zoo model of another tool, which runs on raw values with its own processing (no noise fit)."""
    from livedenoise.bioimageio_import import ForeignNetwork

    if normalizer is None or isinstance(network, ForeignNetwork):
        return "{}"
    return json.dumps(normalizer.to_dict(), sort_keys=True)


def resolve_model(model: Any, *, channel: int | None = None) -> ModelRef:
    """Turn what the user gave (``"standard"``, ``"fast"``, a path, a Checkpoint, a Denoiser, ``(model, normalizer)``)
    into a ModelRef.

    Shipped names and paths are checked here (readable header), so a missing or corrupt model
    fails before anything is written.
    """
    from livedenoise.checkpoint import Checkpoint, read_metadata
    from livedenoise.modelspec import is_backbone_name, model_path

    if isinstance(model, ModelRef):
        return model
    if isinstance(model, (str, os.PathLike)) and not is_backbone_name(model) and Path(model).exists():
        from livedenoise.bioimageio_import import FOREIGN_ARCH, is_foreign_package, load_foreign_bioimageio

        if is_foreign_package(model):  # another tool's Model Zoo package: run as it is, no noise model to fit
            foreign = load_foreign_bioimageio(model)  # refuses here, before anything is written
            return ModelRef(name=foreign.name, sha256=file_sha256(model), path=str(Path(model).resolve()),
                            weights_bytes=Path(model).stat().st_size, temporal=False, margin=_margin(foreign.model),
                            arch=FOREIGN_ARCH, first_width=_first_width(None, {}, foreign.model),
                            normalizer_json="{}", channel=channel)
    if isinstance(model, (str, os.PathLike)):
        checkpoint = model_path(model)  # the resolver every entry point uses
        meta = read_metadata(checkpoint)
        # the file the user gave (a package stays a package: each worker takes the checkpoint out itself)
        path = checkpoint if is_backbone_name(model) or not Path(model).is_file() else Path(model)
        return ModelRef(name=str(meta.get("name") or checkpoint.stem), sha256=file_sha256(path),
                        path=str(path.resolve()), weights_bytes=checkpoint.stat().st_size,
                        temporal=_arch_is_temporal(str(meta["arch"])),
                        window=_window(meta) if _arch_is_temporal(str(meta["arch"])) else 1,
                        margin=_arch_margin(str(meta["arch"]), dict(meta["arch_kwargs"])),
                        arch=str(meta["arch"]), first_width=_first_width(meta["arch"], meta["arch_kwargs"]),
                        normalizer_json=json.dumps(meta.get("normalizer", {}), sort_keys=True), channel=channel)
    if isinstance(model, Checkpoint):
        if model.path is not None and Path(model.path).is_file():
            ref = resolve_model(model.path, channel=channel)
            return ModelRef(**{**asdict(ref), "name": model.name})
        sha = _state_sha256(model.model, model.normalizer)
        _keep_local_model(sha, model)
        return ModelRef(name=model.name, sha256=sha, arch=model.arch,
                        first_width=_first_width(model.arch, model.arch_kwargs),
                        temporal=bool(getattr(model.model, "is_temporal", False)), margin=_margin(model.model),
                        window=_window(model.metadata) if getattr(model.model, "is_temporal", False) else 1,
                        normalizer_json=_stored_normalizer_json(model.model, model.normalizer), local_key=sha,
                        channel=channel)
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
    from livedenoise.inference import DEFAULT_WINDOW

    temporal = bool(getattr(model, "is_temporal", False) or getattr(torch_model, "is_temporal", False))
    return ModelRef(name=name, sha256=sha, first_width=_first_width(None, {}, torch_model),
                    arch=getattr(torch_model, "arch", None), temporal=temporal,
                    # a Denoiser or a fused network knows its window; a bare CNNT runs the Denoiser's default
                    window=int(getattr(model, "window", None) or getattr(torch_model, "window", None)
                               or (DEFAULT_WINDOW if temporal else 1)),
                    margin=_margin(torch_model), normalizer_json=_stored_normalizer_json(torch_model, normalizer),
                    local_key=sha, channel=channel)


@dataclass(frozen=True)
class DenoiserOptions:
    """How each worker builds its Denoiser (the pixel budget bounds the network's working memory)."""

    device: str = "auto"
    pixel_budget: int = 1024 * 1024
    batch_size: int = 4
    ensemble: int = 1  #: flip/rotation self-ensemble size (see ``Denoiser``)
    precision: str = "auto"  #: ``Denoiser`` precision (a job records what ran: fp32, bf16 or fp16)
    second_pass: bool = True  #: temporal backbone: also denoise the motion-compensated average (see ``Denoiser``)
    compiled: bool = False  #: run the network through torch.compile (see ``Denoiser``)


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
            raise CheckpointError(
                f"Checkpoint {ref.path} is missing on this machine; workers need it at the same path.")
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
                                batch_size=options.batch_size, ensemble=options.ensemble, precision=options.precision,
                                second_pass=options.second_pass, compiled=options.compiled)
    else:
        denoiser = Denoiser(source, normalizer=fitted, device=options.device, pixel_budget=options.pixel_budget,
                            batch_size=options.batch_size, ensemble=options.ensemble, precision=options.precision,
                            second_pass=options.second_pass, compiled=options.compiled)
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
                "2-D model (--model fast or standard) for single frames, or --axes with a T if the file is a "
                "time-lapse.")


def _is_temporal(denoiser: Any) -> bool:
    return bool(getattr(denoiser, "is_temporal", False))
