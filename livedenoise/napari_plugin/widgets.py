"""napari widgets "Denoise layer" and "Fine-tune on layer".

Each widget is a thin magicgui form around a plain function of :mod:`livedenoise.napari_plugin.work`, which does
the work and is tested without napari. The work runs in a napari thread worker, started here, so the viewer stays
responsive during a fine-tune; its result arrives as a new layer, its warnings and errors as napari notifications
(one sentence each, as on the command line). (No ``from __future__ import annotations`` here: magicgui reads the
annotations to build the form.)
"""
from pathlib import Path
from typing import Any

import napari
import napari.layers
import napari.types
from magicgui import magic_factory
from napari.qt.threading import FunctionWorker, thread_worker
from napari.utils.notifications import show_error, show_info, show_warning

from livedenoise.errors import LivedenoiseError
from livedenoise.napari_plugin.work import (
    MODEL_TIP,
    LayerData,
    denoise_layer_data,
    finetune_on_data,
    layer_placement,
)


def _worker(function: Any, *args: Any, on_done: Any, **kwargs: Any) -> FunctionWorker:
    """Start ``function`` in a napari thread worker and return it: napari adds the first value it returns as a layer;
    ``on_done(second value)`` runs in napari's thread when it is done; an error becomes one notification sentence.

    Why errors are caught inside: a worker's own error path adds a traceback report to napari's notification; a user
    gets one sentence, as on the command line. The outcome is also kept on the worker (``livedenoise_outcome``).
    """
    outcome: dict[str, Any] = {}

    def work() -> LayerData | None:
        try:
            layer, outcome["extra"] = function(*args, **kwargs)
        except Exception as exc:  # shown as one sentence in napari's thread (report below)
            outcome["error"] = str(exc) if isinstance(exc, LivedenoiseError) else f"{exc.__class__.__name__}: {exc}"
            return None
        outcome["layer"] = layer
        return layer

    def report(_: Any) -> None:
        if "error" in outcome:
            show_error(f"livedenoise: {outcome['error']}")
        else:
            on_done(outcome["extra"])

    # connected before it starts (a queued signal emitted before a connection would be lost), then started now:
    # napari's handler for a returned worker only connects its result to the viewer
    worker = thread_worker(work, connect={"returned": report}, ignore_errors=True)()
    worker.livedenoise_outcome = outcome
    return worker


def _refused(message: str) -> Any:
    raise LivedenoiseError(message)


def _show_warnings(warnings: list[str]) -> None:
    for w in warnings:
        show_warning(f"livedenoise: {w}")
    if not warnings:
        show_info("livedenoise: denoised; the residual looks like the fitted noise")


def follow_active_image(field: Any, layers: Any) -> Any:
    """Point ``field`` (a widget's image-layer box) at the layer list's active image layer, now and whenever the
    selection changes; returns the function that does it (also to call when the widget is docked).

    Why: a layer box starts at the bottom layer, which for the simulated sample is its hidden ground truth: one
    click on *Denoise* would then denoise the truth. Following the selection denoises what the user looks at.
    """
    def pick(*_: Any) -> None:
        active = layers.selection.active
        if isinstance(active, napari.layers.Image):
            field.reset_choices()
            if active in field.choices:
                field.value = active

    layers.selection.events.active.connect(pick)
    pick()
    return pick


def _follow_viewer(name: str) -> Any:
    """A magicgui ``widget_init`` that makes the ``name`` layer box follow the current viewer's selection."""
    def init(widget: Any) -> None:
        viewer = napari.current_viewer()
        if viewer is not None:
            pick = follow_active_image(getattr(widget, name), viewer.layers)
            widget.native_parent_changed.connect(pick)  # docking refills the box; point it again

    return init


@magic_factory(
    widget_init=_follow_viewer("image"),
    call_button="Denoise",
    model={"tooltip": MODEL_TIP},
    time_lapse={"tooltip": "the first axis is time over one field: noise measured between frames, and the "
                           "temporal model (if chosen) uses neighbouring frames"},
    ensemble={"choices": [1, 2, 4, 8], "tooltip": "average over flips/rotations: better, that many times slower"},
)
def denoise_layer_widget(image: napari.layers.Image, model: str = "fast", time_lapse: bool = False,
                         ensemble: int = 1) -> FunctionWorker[napari.types.LayerDataTuple]:
    """Denoise the chosen layer the way `livedenoise denoise` does (noise model fitted to the layer)."""
    if image is None:
        return _worker(_refused, "choose an image layer to denoise.", on_done=_show_warnings)
    return _worker(denoise_layer_data, image.data, image.name, model, time_lapse=time_lapse, ensemble=ensemble,
                   placement=layer_placement(image), on_done=_show_warnings)


def _show_summary(summary: str) -> None:
    show_info(f"livedenoise: {summary}")


@magic_factory(
    widget_init=_follow_viewer("noisy"),
    call_button="Fine-tune and denoise",
    clean={"tooltip": "leave empty for self-supervised fine-tuning on the noisy layer alone"},
    backbone={"tooltip": MODEL_TIP},
    time_budget_s={"label": "time budget (s)", "min": 1.0, "max": 3600.0},
    save_as={"mode": "w", "filter": "*.safetensors"},
)
def finetune_layer_widget(noisy: napari.layers.Image, clean: napari.layers.Image | None = None,
                          backbone: str = "fast", time_budget_s: float = 60.0,
                          save_as: Path = Path("~/livedenoise-adapted.safetensors"), overwrite: bool = False,
                          ) -> FunctionWorker[napari.types.LayerDataTuple]:
    """Adapt a backbone to these images (few pairs, or self-supervised), save it, and denoise the noisy layer."""
    if noisy is None:
        return _worker(_refused, "choose the noisy image layer.", on_done=_show_summary)
    return _worker(finetune_on_data, noisy.data, None if clean is None else clean.data, save_as, name=noisy.name,
                   backbone=backbone, time_budget_s=time_budget_s, overwrite=overwrite,
                   placement=layer_placement(noisy), on_done=_show_summary)
