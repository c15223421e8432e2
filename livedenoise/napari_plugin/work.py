"""What the napari widgets do, as plain functions: callable (and tested) without napari or Qt.

The widgets (:mod:`livedenoise.napari_plugin.widgets`) only collect the inputs and run these in a thread worker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import LivedenoiseError
from livedenoise.modelspec import SHIPPED

#: The tool tip of every model field of the plugin's widgets.
MODEL_TIP = f"a shipped backbone ({', '.join(SHIPPED)}), a .safetensors checkpoint or a Model Zoo .zip"

#: (data, layer keyword arguments, layer type): what napari adds as a layer.
LayerData = tuple[np.ndarray, dict[str, Any], str]


def layer_placement(source: Any) -> dict[str, Any]:
    """Where the new layer sits: the source layer's scale and translation, so the two overlay."""
    return {"scale": tuple(source.scale), "translate": tuple(source.translate)} if source is not None else {}


def denoise_layer_data(data: Any, name: str, model: str = "fast", *, time_lapse: bool = False, ensemble: int = 1,
                       placement: dict[str, Any] | None = None) -> tuple[LayerData, list[str]]:
    """Denoise a layer's data; returns the new layer and the warnings to show. Another tool's Model Zoo package
    (a ``.zip`` without livedenoise's checkpoint) runs as it is: on the raw values, plane by plane, with no noise
    model fitted (:mod:`livedenoise.bioimageio_import`)."""
    from livedenoise.arrays import denoise_array
    from livedenoise.bioimageio_import import is_foreign_package

    if model and Path(model).suffix.lower() == ".zip" and Path(model).is_file() and is_foreign_package(model):
        return _run_foreign(np.asarray(data), name, model, ensemble=ensemble, placement=placement)
    result = denoise_array(np.asarray(data), model or "fast", time_lapse=time_lapse, ensemble=ensemble)
    meta = {"livedenoise": {"model": result.model, "noise_model": result.noise_fit.to_dict(),
                            "residual_ok": result.residual_ok, "warnings": result.warnings, "source_layer": name}}
    return (result.denoised, {"name": f"{name} denoised", "metadata": meta, **(placement or {})}, "image"), \
        result.warnings


def _run_foreign(arr: np.ndarray, name: str, package: str, *, ensemble: int,
                 placement: dict[str, Any] | None) -> tuple[LayerData, list[str]]:
    from livedenoise.inference import Denoiser

    denoiser = Denoiser(package, device="auto", ensemble=ensemble)
    out = np.stack([denoiser.denoise(p) for p in _planes(arr, "image")]).reshape(arr.shape)
    warning = (f"{denoiser.name!r} is another tool's Model Zoo model: run as it is, on the raw values, with no "
               "noise model fitted and no residual check")
    meta = {"livedenoise": {"model": denoiser.name, "noise_model": None, "residual_ok": None,
                            "warnings": [warning], "source_layer": name, "foreign_package": str(package)}}
    return (out.astype(np.float32, copy=False), {"name": f"{name} denoised", "metadata": meta, **(placement or {})},
            "image"), [warning]


def _planes(data: Any, what: str) -> list[np.ndarray]:
    arr = np.asarray(data)
    if arr.ndim < 2:
        raise LivedenoiseError(f"the {what} layer has shape {arr.shape}; expected an image (..., Y, X).")
    return list(arr.reshape(-1, *arr.shape[-2:]))


def finetune_on_data(noisy: Any, clean: Any | None, save_as: Path, *, name: str = "noisy", backbone: str = "fast",
                     time_budget_s: float = 60.0, overwrite: bool = False,
                     placement: dict[str, Any] | None = None) -> tuple[LayerData, str]:
    """Fine-tune ``backbone`` on a noisy layer (self-supervised) or on noisy/clean layers (pairs, plane by plane),
    save the adapted model to ``save_as``, and denoise the noisy layer with it.

    Returns the denoised layer and a one-line summary. Nothing is written when the fine-tune did not adapt (the
    backbone would be saved under a new name), or when ``save_as`` exists and ``overwrite`` is false.
    """
    from livedenoise.arrays import denoise_array
    from livedenoise.modelspec import load_model_spec
    from livedenoise.training.finetune import finetune

    target = Path(save_as).expanduser()
    if target.suffix != ".safetensors":
        raise LivedenoiseError(f"{target}: save the adapted model as a .safetensors file.")
    if target.exists() and not overwrite:
        raise LivedenoiseError(f"{target} already exists; choose another file or tick 'overwrite'.")
    noisy_planes = _planes(noisy, "noisy")
    clean_planes = _planes(clean, "clean") if clean is not None else None
    if clean_planes is not None and [p.shape for p in clean_planes] != [p.shape for p in noisy_planes]:
        raise LivedenoiseError(f"the clean layer has {len(clean_planes)} plane(s) of {clean_planes[0].shape} but the "
                               f"noisy layer {len(noisy_planes)} of {noisy_planes[0].shape}; "
                               "pairs must match plane by plane.")
    from livedenoise.modelspec import model_path

    source = Path(model_path(backbone or "fast")).resolve()
    if target.resolve() == source:
        raise LivedenoiseError(f"{target} is the backbone being fine-tuned; save the adapted model under another name.")
    base = load_model_spec(backbone or "fast")
    res = finetune(base, noisy_planes, clean_planes, time_budget_s=time_budget_s)
    f = res.fit
    if not res.adapted:
        raise LivedenoiseError(f"not adapted: {f.not_adapted_reason()}; nothing was written (give a larger time "
                               "budget or more planes).")
    target.parent.mkdir(parents=True, exist_ok=True)
    res.checkpoint.save(target)
    result = denoise_array(np.asarray(noisy), res.checkpoint)
    summary = (f"{res.mode} fine-tuning of {base.name}: {f.steps} steps in {f.elapsed_s:.0f} s, held-out loss "
               f"{f.initial_val_loss:.4g} -> {f.best_val_loss:.4g}; saved {target}")
    meta = {"livedenoise": {"model": str(target), "training": res.checkpoint.metadata.get("training", {}),
                            "warnings": result.warnings, "source_layer": name}}
    return (result.denoised, {"name": f"{name} denoised ({target.stem})", "metadata": meta, **(placement or {})},
            "image"), summary
