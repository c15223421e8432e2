"""BioImage Model Zoo packages: export a livedenoise model, and load one back.

Why: a model adapted to one microscope and sample should run where the microscopist already works
(deepImageJ, ilastik, bioimageio.core, napari plugins), and come back into livedenoise unchanged.

What an exported package holds (a ``.zip``, format 0.5 of the bioimage.io model spec, built and
validated with ``bioimageio.spec``):

* ``model.onnx`` and ``model.torchscript.pt`` (for deepImageJ in Fiji, which runs TorchScript): raw camera
  values in, denoised values out, ``[batch, 1, y, x]`` float32. The noise
  model travels inside the graph: the variance-stabilising transform, the network and the inverse, with
  saturated pixels passed through. No bioimage.io pre-processing could express the generalised
  Anscombe transform, so the graph does it. The noise model is the one fitted to ``sample`` (the
  images the package is for) unless ``noise_model="stored"``, exactly as ``livedenoise denoise`` does.
* ``test_input.npy`` / ``test_output.npy``: a crop of the sample and the PyTorch output for it; the
  ONNX and TorchScript outputs are checked against it (within 1e-3 of its range) before anything is written.
* ``livedenoise-checkpoint.safetensors`` (an attachment): the livedenoise checkpoint itself, so that
  ``livedenoise denoise --model model.zip`` (or ``load_bioimageio``) gets the very same network back.
  Nothing is ever unpickled, here or by livedenoise when it reads the package.
* ``README.md`` (provenance: training steps, noise model, what the package does not do), ``cover.png``.

* ``model.pt``: the same module's ``pytorch_state_dict`` weights, for tools that run PyTorch (bioimageio.core,
  ilastik). Its architecture is :func:`raw_to_denoised` in this module, with the network and noise model as its
  keyword arguments: a consumer needs livedenoise importable to rebuild it (``pip install livedenoise``); the ONNX
  and TorchScript weights need nothing. It is a state dict of tensors only, loadable with
  ``torch.load(..., weights_only=True)``; livedenoise itself reads the safetensors attachment.

What the package does *not* carry: livedenoise's own checks around the network (the residual check,
the pass-through of frames far above the training range, tiling by memory budget). Consumers tile
with the declared halo (the receptive-field radius).

Temporal (2D+T) models and noise models with per-pixel camera maps (which fit one sensor size) are
refused with a sentence.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from livedenoise.checkpoint import Checkpoint, load_checkpoint
from livedenoise.config import cache_dir
from livedenoise.errors import CheckpointError, ConfigError, InputDataError
from livedenoise.inference import _round_up
from livedenoise.normalization import Normalizer

log = logging.getLogger(__name__)

#: The attachment holding the livedenoise checkpoint inside a package.
CHECKPOINT_ATTACHMENT = "livedenoise-checkpoint.safetensors"
ONNX_OPSET = 17
#: Largest side of the test tensor (a centre crop of the sample).
TEST_SIDE = 256
NOISE_MODELS = ("fit", "stored")
#: What bioimage.io allows in a model name (spec 0.5): these characters, 5 to 128 of them.
NAME_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")
CITATIONS = (
    ("Y. Wang et al.: Image denoising for fluorescence microscopy by supervised to self-supervised transfer "
     "learning, Optics Express 29(25), 41303 (2021) (the pretrain-then-adapt method)",
     "https://opg.optica.org/oe/fulltext.cfm?id=465503&uri=oe-29-25-41303"),
    ("A. Rehman et al.: Convolutional Neural Network Transformer (CNNT) for fluorescence microscopy image "
     "denoising with improved generalization and fast adaptation", "https://arxiv.org/abs/2404.04726"),
)


class RawToDenoised(nn.Module):
    """Raw camera values -> denoised values: the noise model's transform, the network, the inverse.

    ``forward`` takes ``[B, 1, Y, X]`` with Y and X multiples of the network's size multiple (the
    package declares sizes that are). Saturated pixels (at or above the normaliser's saturation
    level) are passed through unchanged, as :class:`~livedenoise.inference.Denoiser` does.
    """

    def __init__(self, network: nn.Module, normalizer: Normalizer) -> None:
        super().__init__()
        if normalizer.has_pixel_maps:
            raise ConfigError("The noise model has per-pixel camera maps, which fit one sensor size; a BioImage Model "
                              "Zoo model takes any size. Export with a noise model fitted to the images "
                              "(noise_model='fit' and a sample) instead.")
        self.network = network
        self.normalizer = normalizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalizer.inverse_torch(self.network(self.normalizer.forward_torch(x)))
        if self.normalizer.saturation is not None:
            y = torch.where(x >= self.normalizer.saturation, x, y)
        return y


def raw_to_denoised(arch: str, arch_kwargs: dict[str, Any], normalizer: dict[str, Any]) -> RawToDenoised:
    """The exported module, empty: the architecture of a package's ``pytorch_state_dict`` weights.

    bioimage.io tools call it with the keyword arguments the package records (the network's architecture and
    the noise model, :meth:`Normalizer.to_dict`), then load the package's state dict into it.
    """
    from livedenoise.models import build_model

    return RawToDenoised(build_model(arch, **arch_kwargs), Normalizer.from_dict(normalizer)).eval()


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def export_bioimageio(
    model: Checkpoint | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sample: np.ndarray | Sequence[np.ndarray] | None = None,
    noise_model: str = "fit",
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a BioImage Model Zoo package (``.zip``) at ``output``; returns the path.

    ``model``: a Checkpoint, a shipped backbone name or a ``.safetensors`` path (a 2-D network).
    ``sample``: the images the package is for (2-D frames, or stacks of them); the noise model is fitted
    to them and a centre crop of the first becomes the test tensor. ``noise_model="stored"`` keeps the
    checkpoint's own normaliser (a model adapted to this very camera and light level); a sample is then
    optional (without one a test image is synthesised from the noise model). ``authors``: names for the
    package's author list. The package is written under a temporary name and renamed when complete;
    an existing ``output`` is replaced only with ``overwrite``.
    """
    from bioimageio.spec import save_bioimageio_package

    from livedenoise.modelspec import load_model_spec

    out = Path(output)
    if out.suffix.lower() != ".zip":
        raise ConfigError(f"{out}: a BioImage Model Zoo package is a .zip file; give an output path ending in .zip.")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another path or pass overwrite=True (--overwrite).")
    if isinstance(model, (str, os.PathLike)) and Path(model).exists() and Path(model).resolve() == out.resolve():
        raise ConfigError(f"{out}: is the model being exported; the package would replace it. Choose another output "
                          "path (inputs are never overwritten, overwrite or not).")
    from livedenoise.diskspace import ensure_room

    ensure_room(out.parent, 0)  # an unwritable folder fails now, not after the noise fit and the export
    if noise_model not in NOISE_MODELS:
        raise ConfigError(f"noise_model {noise_model!r} is unknown; expected one of {', '.join(NOISE_MODELS)}.")
    if name is not None:
        _check_name(name)
    ckpt = model if isinstance(model, Checkpoint) else load_model_spec(model, device="cpu")
    _check_exportable(ckpt)
    frames = _sample_frames(sample)
    if noise_model == "fit":
        if not frames:
            raise ConfigError("Exporting with a fitted noise model needs sample images of the data the package is for "
                              "(--sample IMAGE); or keep the checkpoint's own with --noise-model stored.")
        from livedenoise.noise_model import fit_noise_model

        fit = fit_noise_model(frames, like=ckpt.normalizer)
        for warning in fit.warnings:
            log.warning("noise model: %s", warning)
        normalizer, noise_text = fit.normalizer, fit.describe()
    else:
        normalizer, noise_text = ckpt.normalizer, f"stored in the checkpoint: {ckpt.normalizer.describe()}"
    network = ckpt.model.to("cpu").eval().float()
    wrapper = RawToDenoised(network, normalizer).eval()
    multiple = int(getattr(network, "size_multiple", 1))
    halo = _round_up(int(getattr(network, "receptive_field_radius", lambda: 0)()), multiple)
    test_in = _test_input(frames, normalizer, multiple, _min_side(multiple, halo))
    with torch.inference_mode():
        test_out = wrapper(torch.from_numpy(test_in)).numpy().astype(np.float32)
    if not np.isfinite(test_out).all():
        raise CheckpointError(f"Model {ckpt.name!r} gives non-finite values on the test image; nothing was exported.")

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".livedenoise-bmz-", dir=out.parent) as tmp:
        work = Path(tmp)
        onnx_path = work / "model.onnx"
        _export_onnx(wrapper, test_in, onnx_path)
        onnx_error = _check_onnx(onnx_path, test_in, test_out)
        _export_torchscript(wrapper, test_in, test_out, work / "model.torchscript.pt", multiple)
        state_kwargs = {"arch": ckpt.arch, "arch_kwargs": json.loads(json.dumps(ckpt.arch_kwargs)),
                        "normalizer": normalizer.to_dict()}
        _export_state_dict(wrapper, state_kwargs, test_in, test_out, work / "model.pt")
        np.save(work / "test_input.npy", test_in)
        np.save(work / "test_output.npy", test_out)
        packaged = ckpt.clone()
        packaged.normalizer = normalizer
        packaged.save(work / CHECKPOINT_ATTACHMENT, name=ckpt.name)
        _write_cover(test_in[0, 0], test_out[0, 0], work / "cover.png")
        title = name or _default_title(ckpt.name)
        (work / "README.md").write_text(_documentation(ckpt, title, noise_text, noise_model, multiple, halo, onnx_error,
                                                       test_in.shape[-2:]))
        try:
            descr = _describe(ckpt, work, title, description, authors, multiple, halo, noise_text, state_kwargs)
        except ValueError as exc:  # pydantic's ValidationError: a field bioimage.io does not accept
            raise ConfigError(f"The package description is not valid for bioimage.io: {_first_error(exc)}") from None
        packaged_zip = work / "package.zip"  # inside the temporary folder: a failure leaves nothing behind
        save_bioimageio_package(descr, output_path=packaged_zip)
        os.replace(packaged_zip, out)
    log.info("Wrote BioImage Model Zoo package %s (%s)", out, ckpt.name)
    return out


def _check_name(name: str) -> None:
    bad = sorted(set(name) - NAME_ALPHABET)
    if bad or not 5 <= len(name) <= 128:
        raise ConfigError(f"Package name {name!r} is not allowed by bioimage.io; expected 5 to 128 letters, digits, "
                          "spaces and _ + - ( )" + (f" (not {''.join(bad)!r})" if bad else "") + ".")


def _default_title(model_name: str) -> str:
    """'livedenoise <model name>' with the characters bioimage.io refuses in a name replaced by '-'."""
    title = "livedenoise " + "".join(c if c in NAME_ALPHABET else "-" for c in model_name)
    return title[:128]


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(x) for x in first.get('loc', ()))}: {first.get('msg')}"
    # the spec's ValueError reads "Invalid model description:" then ": Value error, <the reason>" on the next line
    lines = [line.strip(" :") for line in str(exc).splitlines()]
    reasons = [line for line in lines[1:] if line]
    return (lines[0] + ": " + reasons[0]) if reasons and lines[0].endswith("description") else lines[0]


def _check_exportable(ckpt: Checkpoint) -> None:
    net = ckpt.model
    if bool(getattr(net, "is_temporal", False)):
        raise ConfigError(f"Model {ckpt.name!r} is a temporal (2D+T) network; only 2-D models can be exported to the "
                          "BioImage Model Zoo for now.")
    if int(getattr(net, "in_channels", 1)) != 1 or int(getattr(net, "out_channels", 1)) != 1:
        raise ConfigError(f"Model {ckpt.name!r} is not a single-channel denoiser; it cannot be exported.")


def _sample_frames(sample: np.ndarray | Sequence[np.ndarray] | None) -> list[np.ndarray]:
    from livedenoise.normalization import check_image

    if sample is None:
        return []
    arrays = [sample] if isinstance(sample, np.ndarray) else list(sample)
    frames: list[np.ndarray] = []
    for arr in arrays:
        a = check_image(arr, "sample image", min_ndim=2)
        frames.extend(a.reshape(-1, *a.shape[-2:]))
    return frames


def _test_input(frames: list[np.ndarray], normalizer: Normalizer, multiple: int, min_side: int) -> np.ndarray:
    """``[1, 1, Y, X]`` float32: a centre crop of the first sample frame (sides multiples of ``multiple``, at least
    ``min_side``, the smallest size the package declares)."""
    if frames:
        frame = np.asarray(frames[0], np.float32)
    else:  # no sample: Poisson-Gaussian frames of smooth blobs, drawn from the noise model itself
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:TEST_SIDE, 0:TEST_SIDE].astype(np.float64)
        signal = np.zeros((TEST_SIDE, TEST_SIDE))
        for cy, cx in rng.uniform(20, TEST_SIDE - 20, size=(12, 2)):
            signal += 20.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
        electrons = rng.poisson(signal + 2.0) * normalizer.noise_a
        frame = (electrons * normalizer.gain + normalizer.offset).astype(np.float32)
    h, w = frame.shape
    th, tw = (min(max(TEST_SIDE, min_side), (s // multiple) * multiple) for s in (h, w))
    if th < min_side or tw < min_side:
        raise InputDataError(f"The sample image is {h}x{w} pixels; expected at least {min_side}x{min_side} (twice the "
                             "network's receptive-field radius, the smallest input the package can declare).")
    y0, x0 = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(frame[y0:y0 + th, x0:x0 + tw])[None, None]


def _export_onnx(wrapper: nn.Module, test_in: np.ndarray, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice and tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.from_numpy(test_in),), str(path), input_names=["raw"],
                          output_names=["denoised"], opset_version=ONNX_OPSET, dynamo=False,
                          dynamic_axes={"raw": {0: "batch", 2: "y", 3: "x"}, "denoised": {0: "batch", 2: "y", 3: "x"}})


def _export_torchscript(wrapper: nn.Module, test_in: np.ndarray, test_out: np.ndarray, path: Path,
                        multiple: int) -> None:
    """Trace ``wrapper`` (sizes as declared: multiples of the size multiple, so no padding branch is traced), check
    the traced module in memory against ``test_out`` and at another size, then save it."""
    import warnings

    x = torch.from_numpy(test_in)
    with warnings.catch_warnings():  # tracer warnings about Python control flow on shapes (no branch is taken)
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (x,), check_trace=False)
    with torch.inference_mode():
        got = traced(x).numpy()
        half = x[..., : max(multiple, x.shape[-2] // 2 // multiple * multiple), :]  # another size the network takes
        other, ref = traced(half).numpy(), wrapper(half).numpy()
    span = float(test_out.max() - test_out.min()) or 1.0
    err = max(float(np.abs(got - test_out).max()), float(np.abs(other - ref).max()))
    if not err <= 1e-3 * span:
        raise CheckpointError(f"The traced TorchScript model differs from PyTorch by {err:.3g} (range {span:.3g}); "
                              "nothing was exported.")
    traced.save(str(path))


def _export_state_dict(wrapper: nn.Module, kwargs: dict[str, Any], test_in: np.ndarray, test_out: np.ndarray,
                       path: Path) -> None:
    """Save ``wrapper``'s state dict, and check that :func:`raw_to_denoised` with ``kwargs`` plus that state dict
    (loaded tensors-only, as a consumer does) gives the test output."""
    torch.save(wrapper.state_dict(), path)
    rebuilt = raw_to_denoised(**kwargs)
    rebuilt.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    with torch.inference_mode():
        out = rebuilt(torch.from_numpy(test_in)).numpy()
    span = float(test_out.max() - test_out.min()) or 1.0
    if float(np.max(np.abs(out - test_out))) > 1e-4 * span:
        raise CheckpointError("The state-dict weights rebuilt from their description do not reproduce the model; "
                              "nothing was exported.")


def _check_onnx(path: Path, test_in: np.ndarray, test_out: np.ndarray) -> float:
    """The ONNX graph must give PyTorch's output within 1e-3 of its range; returns the error relative to the range."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"raw": test_in})[0]
    span = float(test_out.max() - test_out.min()) or 1.0
    err = float(np.abs(got - test_out).max())
    if not err <= 1e-3 * span:
        raise CheckpointError(f"The exported ONNX model differs from PyTorch by {err:.3g} (range {span:.3g}); "
                              "nothing was exported.")
    return err / span


def _write_cover(raw: np.ndarray, denoised: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lo, hi = np.percentile(denoised, [0.5, 99.5])
    fig, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=100)  # bioimage.io asks for a 2:1 cover
    for ax, img, label in zip(axes, (raw, denoised), ("raw", "denoised"), strict=True):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(label)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _min_side(multiple: int, halo: int) -> int:
    """Smallest input side the package declares: the spec wants more than twice the halo."""
    return max(multiple, _round_up(2 * halo + multiple, multiple))


def _training_text(ckpt: Checkpoint) -> str:
    training = ckpt.metadata.get("training") or {}
    keys = ("steps", "best_step", "objective", "seconds", "wall_time_s", "data", "seed", "stopped")
    parts = [f"{k} {training[k]}" for k in keys if k in training]
    return "; ".join(parts) if parts else "not recorded in the checkpoint"


def _documentation(ckpt: Checkpoint, title: str, noise_text: str, noise_model: str, multiple: int, halo: int,
                   onnx_error: float, test_shape: tuple[int, ...]) -> str:
    from livedenoise import __version__

    return f"""# {title}

A fluorescence-microscopy denoiser exported by livedenoise {__version__}.

- **Network**: `{ckpt.arch}` {json.dumps(ckpt.arch_kwargs, sort_keys=True)}; checkpoint `{ckpt.name}`.
- **Training**: {_training_text(ckpt)}.
- **Noise model** ({'fitted to the sample images given at export' if noise_model == 'fit' else "the checkpoint's own"}):
  {noise_text}. It is part of the ONNX graph: the input is the camera's raw values (any number type, as
  float32), the output denoised values in the same units. Saturated pixels are passed through.
- **Sizes**: y and x must be multiples of {multiple}; tile with a halo of {halo} pixels (the receptive-field
  radius) for seamless results.

The noise model is specific to the camera, gain and offset of the sample it was fitted to. For other
data, re-export with a sample of it (`livedenoise export MODEL -o model.zip --sample IMAGE`), or run the
package through livedenoise, which fits the noise model to every dataset:
`livedenoise denoise --model this-package.zip data.tif -o out/`.

Not included (livedenoise does these around the network): the residual check that flags outputs that
do not fit the noise model, the pass-through of frames far above the training range, memory-bounded
tiling.

# Validation

At export, ONNX Runtime ran `model.onnx` on the test image ({test_shape[0]}x{test_shape[1]} pixels of the
sample) and matched the PyTorch reference within {onnx_error:.1e} of the output's range (the export refuses
above 1e-3). How well livedenoise's models denoise, beside VST+BM3D and Noise2Void on real and simulated
data, is measured in the livedenoise README's benchmark tables.
"""


def _describe(ckpt: Checkpoint, work: Path, title: str, description: str | None, authors: Sequence[str],
              multiple: int, halo: int, noise_text: str, state_kwargs: dict[str, Any]) -> Any:
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromLibraryDescr,
        Author,
        AxisId,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        FileDescr,
        Identifier,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        LicenseId,
        ModelDescr,
        OnnxWeightsDescr,
        OutputTensorDescr,
        ParameterizedSize,
        PytorchStateDictWeightsDescr,
        SizeReference,
        SpaceInputAxis,
        SpaceOutputAxisWithHalo,
        TensorId,
        TorchscriptWeightsDescr,
        Version,
        WeightsDescr,
    )

    from livedenoise import __version__

    min_side = _min_side(multiple, halo)
    raw, den = TensorId("raw"), TensorId("denoised")
    in_axes: list[BatchAxis | ChannelAxis | SpaceInputAxis] = [
        BatchAxis(), ChannelAxis(channel_names=[Identifier("channel0")]),
        SpaceInputAxis(id=AxisId("y"), size=ParameterizedSize(min=min_side, step=multiple)),
        SpaceInputAxis(id=AxisId("x"), size=ParameterizedSize(min=min_side, step=multiple))]
    out_axes: list[BatchAxis | ChannelAxis | SpaceOutputAxisWithHalo] = [
        BatchAxis(), ChannelAxis(channel_names=[Identifier("channel0")]),
        SpaceOutputAxisWithHalo(id=AxisId("y"), size=SizeReference(tensor_id=raw, axis_id=AxisId("y")), halo=halo),
        SpaceOutputAxisWithHalo(id=AxisId("x"), size=SizeReference(tensor_id=raw, axis_id=AxisId("x")), halo=halo)]
    names = [a for a in authors if str(a).strip()] or ["the livedenoise developers"]
    return ModelDescr(
        name=title,
        description=description or ("Fluorescence-microscopy denoiser (U-Net pretrained on simulated camera noise, "
                                     f"adapted by livedenoise); noise model: {noise_text}"),
        authors=[Author(name=str(a)) for a in names],
        # pydantic validates the url string into the spec's HttpUrl (the typed __init__ wants the HttpUrl)
        cite=[CiteEntry(text=text, url=url) for text, url in CITATIONS],  # type: ignore[arg-type]
        license=LicenseId("BSD-3-Clause"),
        documentation=FileDescr(source=work / "README.md"),
        covers=[FileDescr(source=work / "cover.png")],
        tags=["denoising", "fluorescence-light-microscopy", "2d", "unet", "livedenoise", "onnx", "torchscript",
              "pytorch"],
        inputs=[InputTensorDescr(id=raw, axes=in_axes, test_tensor=FileDescr(source=work / "test_input.npy"),
                                 data=IntervalOrRatioDataDescr(type="float32"),
                                 description="raw camera values (ADU)")],
        outputs=[OutputTensorDescr(id=den, axes=out_axes, test_tensor=FileDescr(source=work / "test_output.npy"),
                                   data=IntervalOrRatioDataDescr(type="float32"),
                                   description="denoised values, same units as the input")],
        weights=WeightsDescr(
            pytorch_state_dict=PytorchStateDictWeightsDescr(
                source=work / "model.pt", pytorch_version=Version(torch.__version__.split("+")[0]),
                architecture=ArchitectureFromLibraryDescr(callable=Identifier("raw_to_denoised"),
                                                          import_from="livedenoise.bioimageio", kwargs=state_kwargs)),
            onnx=OnnxWeightsDescr(source=work / "model.onnx", opset_version=ONNX_OPSET),
            torchscript=TorchscriptWeightsDescr(source=work / "model.torchscript.pt",
                                                pytorch_version=Version(torch.__version__.split("+")[0]))),
        attachments=[FileDescr(source=work / CHECKPOINT_ATTACHMENT)],
        # pydantic validates the dict into the spec's Config (the typed __init__ wants a Config)
        config={  # type: ignore[arg-type]
            "livedenoise": {"version": __version__, "checkpoint": CHECKPOINT_ATTACHMENT, "name": ckpt.name,
                            "arch": ckpt.arch}},
    )


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------
def is_bioimageio_package(path: str | os.PathLike[str]) -> bool:
    """True for a ``.zip`` holding an ``rdf.yaml`` / ``*.bioimageio.yaml``, or such a YAML file or its folder."""
    p = Path(path)
    if p.is_dir():
        return any(p.glob("rdf.yaml")) or any(p.glob("*.bioimageio.yaml"))
    if p.suffix.lower() in (".yaml", ".yml"):
        return p.name == "rdf.yaml" or p.name.endswith(".bioimageio.yaml")
    if p.suffix.lower() == ".zip" and p.is_file():
        try:
            with zipfile.ZipFile(p) as z:
                return any(n == "rdf.yaml" or n.endswith(".bioimageio.yaml") for n in z.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def checkpoint_from_bioimageio(path: str | os.PathLike[str],
                               cache_folder: str | os.PathLike[str] | None = None) -> Path:
    """The livedenoise checkpoint inside a package, as a ``.safetensors`` file in the cache; returns its path.

    The package's description is read and validated with ``bioimageio.spec``; the attachment's sha256
    (recorded in the description) is checked. A package that livedenoise did not export has no such
    attachment and is refused in one sentence: livedenoise runs only its own architectures.
    """
    from bioimageio.spec import InvalidDescr, load_model_description

    p = Path(path)
    try:  # "latest": an older (0.4) package is converted, so its attachments read like 0.5's
        descr = load_model_description(p, perform_io_checks=False, format_version="latest")
    except Exception as exc:  # the spec library raises several types for unreadable packages
        raise CheckpointError(f"{p}: not a readable BioImage Model Zoo package ({_first_error(exc)}).") from None
    if isinstance(descr, InvalidDescr):
        raise CheckpointError(f"{p}: not a valid BioImage Model Zoo model description.")
    attachments = getattr(descr, "attachments", None) or []
    attachments = getattr(attachments, "files", attachments) or []  # format 0.4 kept an object with a file list
    attachment = next((a for a in attachments if _file_name(getattr(a, "source", a)) == CHECKPOINT_ATTACHMENT), None)
    if attachment is None:
        raise CheckpointError(f"{p}: this BioImage Model Zoo model was not exported by livedenoise (it has no "
                              f"{CHECKPOINT_ATTACHMENT}); livedenoise runs only its own networks.")
    data = _read_member(p, CHECKPOINT_ATTACHMENT)
    sha = hashlib.sha256(data).hexdigest()
    expected = getattr(attachment, "sha256", None)
    if expected is not None and str(expected) != sha:
        raise CheckpointError(f"{p}: {CHECKPOINT_ATTACHMENT} does not match the sha256 its description records "
                              "(a changed or corrupt package).")
    cache = Path(cache_folder) if cache_folder is not None else cache_dir() / "bioimageio"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{sha}.safetensors"
    if not target.is_file():
        fd, tmp = tempfile.mkstemp(prefix=f".{sha[:12]}-", suffix=".partial", dir=cache)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target


def load_bioimageio(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """The livedenoise :class:`Checkpoint` inside a package exported by :func:`export_bioimageio`."""
    return load_checkpoint(checkpoint_from_bioimageio(path), device=device)


def _file_name(source: Any) -> str:
    text = str(getattr(source, "path", None) or source)
    return text.replace("\\", "/").rsplit("/", 1)[-1]


def _read_member(package: Path, name: str) -> bytes:
    missing = CheckpointError(f"{package}: the description names {name} but the package lacks it.")
    try:
        if package.is_dir():
            return (package / name).read_bytes()
        if package.suffix.lower() in (".yaml", ".yml"):
            return (package.parent / name).read_bytes()
        with zipfile.ZipFile(package) as z:
            return z.read(name)
    except (KeyError, FileNotFoundError):
        raise missing from None


__all__ = ["CHECKPOINT_ATTACHMENT", "RawToDenoised", "checkpoint_from_bioimageio", "export_bioimageio",
           "is_bioimageio_package", "load_bioimageio"]
