"""The napari plugin: its manifest, the work behind each widget (always), and the widgets themselves with a headless
napari (when the optional ``[napari]`` extra is installed; CI installs it).

Quality is checked against the simulator's ground truth, files and layers by what they hold.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import re
import time
from pathlib import Path

import numpy as np
import pytest

from livedenoise.errors import InputDataError, LivedenoiseError
from livedenoise.metrics import score

PLUGIN = Path(__file__).resolve().parent.parent / "livedenoise" / "napari_plugin"


@pytest.fixture(scope="module")
def field():
    from livedenoise.napari_plugin.sample_data import simulated_field

    truth, noisy = simulated_field(size=128)
    return noisy[0], truth[0]


def test_sample_data_are_a_low_light_frame_and_its_truth(field):
    from livedenoise.napari_plugin.sample_data import simulated_time_lapse

    noisy, truth = field
    assert noisy.dtype == np.uint16 and noisy.shape == truth.shape == (128, 128)
    assert 5 < score(truth, noisy.astype(np.float32)).psnr < 35  # noisy, but an image of the truth
    (t_truth, t_meta, _), (t_noisy, _, kind) = simulated_time_lapse(frames=3, size=64)
    assert t_noisy.shape == t_truth.shape == (3, 64, 64) and kind == "image" and t_meta["visible"] is False


def test_denoise_array_fits_the_noise_to_the_data_and_beats_the_raw_frame(field):
    from livedenoise.arrays import denoise_array

    noisy, truth = field
    result = denoise_array(noisy, "fast", device="cpu")
    assert result.denoised.shape == noisy.shape and result.denoised.dtype == np.float32
    assert result.model == "backbone-fast" and result.noise_fit.frames == 1 and result.residual_ok
    assert score(truth, result.denoised).psnr > score(truth, noisy.astype(np.float32)).psnr + 3
    stack = np.stack([noisy, noisy])
    assert denoise_array(stack, "fast", device="cpu").denoised.shape == (2, 128, 128)
    for bad, text in [(np.zeros((4, 4)), "expected (..., Y, X)"), (np.full((16, 16), np.nan), "NaN"),
                      (np.zeros((16, 16, 3), dtype=bool), "dtype bool")]:
        with pytest.raises(InputDataError, match=re.escape(text)):
            denoise_array(bad, "fast")
    with pytest.raises(InputDataError, match=r"time_lapse needs a \(T, Y, X\) stack"):
        denoise_array(np.zeros((2, 3, 16, 16), np.uint16), "fast", time_lapse=True)


def test_denoise_layer_work_returns_a_placed_layer_with_its_provenance(field):
    from livedenoise.napari_plugin.work import denoise_layer_data

    noisy, truth = field
    (data, kwargs, kind), warnings = denoise_layer_data(noisy, "cells", "fast", placement={"scale": (0.5, 0.5)})
    assert kind == "image" and kwargs["name"] == "cells denoised" and kwargs["scale"] == (0.5, 0.5)
    assert kwargs["metadata"]["livedenoise"]["model"] == "backbone-fast" and warnings == []
    assert score(truth, data).psnr > score(truth, noisy.astype(np.float32)).psnr + 3


def test_finetune_work_saves_an_adapted_model_and_never_overwrites(tmp_path):
    from livedenoise.checkpoint import load_checkpoint
    from livedenoise.napari_plugin.work import finetune_on_data
    from livedenoise.training.simdata import simulated_pairs

    pairs = list(simulated_pairs(3, 64, seed=5, min_photons=20, max_photons=40))
    noisy, clean = np.stack([p.noisy for p in pairs]), np.stack([p.clean for p in pairs])
    target = tmp_path / "models" / "mine.safetensors"
    (data, kwargs, _), summary = finetune_on_data(noisy, clean, target, name="calib", time_budget_s=20)
    assert target.exists() and load_checkpoint(target).training["mode"] == "pairs"
    assert data.shape == noisy.shape and kwargs["name"] == "calib denoised (mine)"
    assert "pairs fine-tuning of backbone-fast" in summary and str(target) in summary
    before = target.read_bytes()
    with pytest.raises(LivedenoiseError, match="already exists"):
        finetune_on_data(noisy, clean, target, time_budget_s=20)
    with pytest.raises(LivedenoiseError, match="pairs must match plane by plane"):
        finetune_on_data(noisy, clean[:2], tmp_path / "other.safetensors")
    with pytest.raises(LivedenoiseError, match=r"as a \.safetensors file"):
        finetune_on_data(noisy, None, tmp_path / "model.pt")
    with pytest.raises(LivedenoiseError, match="is the backbone being fine-tuned"):
        finetune_on_data(noisy, None, target, backbone=str(target), overwrite=True)
    assert target.read_bytes() == before


def test_the_manifest_names_functions_that_exist_and_is_registered():
    import importlib

    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((PLUGIN / "napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    if importlib.util.find_spec("napari") is not None:  # the widgets' modules import napari
        for python_name in commands.values():
            module, _, attr = python_name.partition(":")
            assert callable(getattr(importlib.import_module(module), attr)), python_name
    used = {w["command"] for w in manifest["contributions"]["widgets"]} | {
        s["command"] for s in manifest["contributions"]["sample_data"]}
    assert used <= set(commands)
    pyproject = (PLUGIN.parent.parent / "pyproject.toml").read_text()
    assert 'livedenoise = "livedenoise.napari_plugin:napari.yaml"' in pyproject
    assert '"napari_plugin/napari.yaml"' in pyproject


# -- with napari ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def napari_app():
    if os.environ.get("LIVEDENOISE_REQUIRE_NAPARI"):  # .ci/napari_check: a missing napari fails, never skips
        import napari  # noqa: F401
    else:
        pytest.importorskip("napari")
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def test_npe2_validates_the_manifest(napari_app):
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(PLUGIN / "napari.yaml")
    assert pm.name == "livedenoise" and {w.display_name for w in pm.contributions.widgets} == {
        "Denoise layer", "Fine-tune on layer", "Live denoise"}


def _finish(app, worker):
    """Wait for a started worker as napari's event loop would, and deliver its queued signals."""
    deadline = time.monotonic() + 120
    while not worker.livedenoise_outcome and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    for _ in range(20):
        app.processEvents()
    return worker.livedenoise_outcome


def test_the_denoise_widget_starts_a_worker_and_reports_errors_in_one_sentence(napari_app, field, monkeypatch):
    from napari.components import ViewerModel

    from livedenoise.napari_plugin import widgets

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(widgets, "show_error", lambda m: shown.append(("error", m)))
    monkeypatch.setattr(widgets, "show_warning", lambda m: shown.append(("warning", m)))
    monkeypatch.setattr(widgets, "show_info", lambda m: shown.append(("info", m)))
    noisy, truth = field
    viewer = ViewerModel()
    layer = viewer.add_image(noisy, name="cells", scale=(0.2, 0.2))
    widget = widgets.denoise_layer_widget()
    assert [w.name for w in widget][:4] == ["image", "model", "time_lapse", "ensemble"]
    worker = widget(layer, model="fast")  # started by the widget: napari only connects the result to the viewer
    outcome = _finish(napari_app, worker)
    data, kwargs, kind = outcome["layer"]
    assert kind == "image" and kwargs["name"] == "cells denoised" and tuple(kwargs["scale"]) == (0.2, 0.2)
    assert score(truth, data).psnr > score(truth, noisy.astype(np.float32)).psnr + 3
    assert shown == [("info", "livedenoise: denoised; the residual looks like the fitted noise")]
    shown.clear()
    outcome = _finish(napari_app, widget(layer, model="no-such-model"))
    assert "layer" not in outcome and len(shown) == 1 and shown[0][0] == "error" and "no-such-model" in shown[0][1]
    assert "Traceback" not in shown[0][1]


def test_the_layer_widgets_follow_the_selected_image_layer_not_the_bottom_one(napari_app, field):
    """The simulated sample adds its hidden ground truth first: a box left at the bottom layer would denoise it."""
    from napari.components import ViewerModel

    from livedenoise.napari_plugin.widgets import follow_active_image

    noisy, truth = field
    viewer = ViewerModel()
    truth_layer = viewer.add_image(truth, name="truth", visible=False)
    noisy_layer = viewer.add_image(noisy, name="noisy")  # added last: the active layer

    class Box:  # a magicgui layer box: choices refreshed from the viewer, a value among them
        def __init__(self):
            self.value, self.choices = None, ()

        def reset_choices(self):
            self.choices = tuple(viewer.layers)

    box = Box()
    follow_active_image(box, viewer.layers)
    assert box.value is noisy_layer
    viewer.layers.selection.active = truth_layer
    assert box.value is truth_layer
    viewer.add_points(np.zeros((1, 2)))  # not an image: the box keeps the image it had
    assert box.value is truth_layer


@pytest.fixture
def qt_core(napari_app, small_microscope_config):
    """A simulated core made while a Qt app runs, so pymmcore-plus gives it Qt signals, as in napari-micromanager:
    MDA events from the acquisition thread reach slots through the GUI thread's event loop."""
    from simulators.core import start_simulated_core

    core = start_simulated_core(small_microscope_config, register_pycromanager=False)
    assert type(core.mda.events).__name__.startswith("Q"), type(core.mda.events)
    yield core
    core.close()


def _run_mda_like_napari_micromanager(app, core, sequence):
    """The MDA in a thread (core.run_mda), napari's event loop running meanwhile."""
    thread = core.run_mda(sequence)
    deadline = time.monotonic() + 300
    while thread.is_alive() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.005)


def test_the_live_widget_denoises_and_records_every_frame_of_an_mda(napari_app, qt_core, tmp_path):
    import useq
    from napari.components import ViewerModel

    from livedenoise.io import open_dataset
    from livedenoise.napari_plugin.live import LAYER_NAME, LiveDenoiseWidget
    from simulators.core import LIGHT_GROUP

    viewer = ViewerModel()
    widget = LiveDenoiseWidget(viewer, core=qt_core)
    widget.output.setText(str(tmp_path / "denoised"))
    widget.model.setText("no-such-model")
    widget.button.setChecked(True)  # a wrong model is refused before any acquisition
    assert not widget.attached and widget.status.text().startswith("error:") and "no-such-model" in \
        widget.status.text()
    widget.model.setText("fast")
    widget.button.setChecked(True)
    assert widget.attached
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 3},
                                channels=[{"config": c, "group": LIGHT_GROUP} for c in ("5%", "20%")])
    _run_mda_like_napari_micromanager(napari_app, qt_core, sequence)
    assert widget.wait_until_recorded(timeout=120)  # the recording ends in a thread of its own, not in napari's
    widget.refresh()
    report = widget.last_report
    assert report is not None and report.frames_written == 6 and not report.errors
    shape = qt_core.microscope.shape
    shown = [layer.name for layer in viewer.layers if layer.name.startswith(LAYER_NAME)]  # one layer per channel
    assert shown and all(viewer.layers[n].data.shape == shape for n in shown)
    assert all(n.endswith(("[5%]", "[20%]")) for n in shown)
    assert "6 denoised frames recorded" in widget.status.text()
    pixel = float(qt_core.getPixelSizeUm())  # overlays napari-micromanager's raw layers, scaled the same way
    assert pixel > 0 and all(tuple(viewer.layers[n].scale) == (pixel, pixel) for n in shown)
    ds = open_dataset(report.denoised_path)
    assert tuple(ds.shape[-2:]) == shape and int(np.prod(ds.shape[:-2])) == 6
    # a calibration's own MDA (tagged) is never recorded as a sequence, whenever its queued events arrive
    from livedenoise.attach import calibration_sequence

    assert not widget._calibrating
    _run_mda_like_napari_micromanager(napari_app, qt_core, calibration_sequence(
        useq.MDASequence(), [(qt_core.getXPosition(), qt_core.getYPosition())], average=2))
    assert widget.last_report is report and len(list((tmp_path / "denoised").iterdir())) == 1
    widget.button.setChecked(False)
    assert not widget.attached
    _run_mda_like_napari_micromanager(napari_app, qt_core, useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    assert widget.last_report is report  # detached: nothing recorded


def test_the_live_widget_runs_another_tools_package_as_it_is_and_refuses_to_calibrate_it(napari_app, qt_core,
                                                                                            tmp_path):
    """A CAREamics-style Model Zoo .zip as the widget's model: every frame of the MDA recorded through it, no noise
    model fitted; Calibrate says in the status line that such a model is not fine-tuned, and acquires nothing."""
    import tifffile
    import useq
    from napari.components import ViewerModel
    from test_bioimageio import _foreign

    from livedenoise.attach.denoiser import FOREIGN_NOISE
    from livedenoise.cli import main
    from livedenoise.evaluate import SimulatedTask
    from livedenoise.io import open_dataset
    from livedenoise.napari_plugin.live import LiveDenoiseWidget

    sample = np.round(SimulatedTask("filaments", 256).test_set(5.0, 0, 1)[0][0]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "sample.tif", sample)
    assert main(["export", "fast", "-o", str(tmp_path / "ours.zip"), "--sample", str(tmp_path / "sample.tif"),
                 "--name", "theirs"]) == 0
    foreign = _foreign(tmp_path / "ours.zip", tmp_path)
    widget = LiveDenoiseWidget(ViewerModel(), core=qt_core)
    widget.model.setText(str(foreign))
    widget.output.setText(str(tmp_path / "denoised"))
    widget.button.setChecked(True)
    assert widget.attached, widget.status.text()
    _run_mda_like_napari_micromanager(napari_app, qt_core, useq.MDASequence(time_plan={"interval": 0, "loops": 3}))
    assert widget.wait_until_recorded(timeout=120)
    report = widget.last_report
    assert report is not None and report.frames_written == 3 and not report.errors, report
    assert [c["noise_model"] for c in report.channels.values()] == [FOREIGN_NOISE]
    assert int(np.prod(open_dataset(report.denoised_path).shape[:-2])) == 3
    widget.button.setChecked(False)
    x, y = qt_core.getXPosition(), qt_core.getYPosition()
    widget.calibrate_button.click()
    assert widget.status.text().startswith("error:") and "runs only as it is" in widget.status.text()
    assert not widget._calibration_running() and (qt_core.getXPosition(), qt_core.getYPosition()) == (x, y)


def test_the_live_widget_calibrates_each_channel_beside_the_field_and_keeps_the_adapted_models(
        napari_app, qt_core, tmp_path):
    """Calibrate: pairs with the chosen presets at fields beside the current one (the stage goes back), one fine-tune
    per channel, frames arriving through the event loop as in napari; the MDA that follows records with the adapted
    models; changing the model drops them. Bad settings are one sentence in the status line."""
    import useq
    from napari.components import ViewerModel
    from test_live_session import identity_backbone

    from livedenoise.config import TrainingConfig
    from livedenoise.napari_plugin.live import FIELD_SPACING, LiveDenoiseWidget
    from simulators.core import LIGHT_GROUP

    core = qt_core
    model = identity_backbone().save(tmp_path / "identity.safetensors")
    widget = LiveDenoiseWidget(ViewerModel(), core=core)
    widget.model.setText(str(model))
    widget.channels.setText("5%, nope")
    widget.calibrate_button.click()
    assert "'nope' are not in the channel group 'Light'" in widget.status.text()
    widget.channels.setText("5%,20%")
    widget.fields.setValue(2)
    widget.average.setValue(4)
    widget.training = TrainingConfig(patch_size=32, batch_size=8, lr_pairs=2e-3, max_steps=40,
                                     steps_per_validation=10, patience=8)
    start = (core.getXPosition(), core.getYPosition())
    step = FIELD_SPACING * core.getPixelSizeUm() * core.getImageWidth()
    np.testing.assert_allclose(widget.calibration_fields(2),
                               [(start[0] + step, start[1]), (start[0] + 2 * step, start[1])])
    widget.output.setText(str(tmp_path / "den"))  # recorded: every frame of both channels denoised
    widget.button.setChecked(True)  # attached while calibrating: the calibration's frames are not recorded
    thread = widget.calibrate()
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:  # napari's event loop runs while it calibrates
        napari_app.processEvents()
        time.sleep(0.01)
    assert not thread.is_alive()
    assert (core.getXPosition(), core.getYPosition()) == pytest.approx(start)
    results = widget.calibration_results
    assert sorted(results) == ["20%", "5%"] and all(r.steps > 0 and r.swapped for r in results.values()), (
        results, widget._message)
    assert sorted(widget.adapted) == ["20%", "5%"] and widget.last_report is None
    widget.refresh()
    assert widget.status.text().startswith("calibration: 5%: adapted")
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 2},
                                channels=[{"config": c, "group": LIGHT_GROUP} for c in ("5%", "20%")])
    _run_mda_like_napari_micromanager(napari_app, core, sequence)
    assert widget.wait_until_recorded(timeout=120)
    report = widget.last_report
    assert report is not None and report.frames_written == 4, (report, widget._message)
    assert {ch: report.channels.get(ch, {}).get("model") for ch in ("5%", "20%")} == {
        "5%": "identity+pairs (5%)", "20%": "identity+pairs (20%)"}, (report, widget._message)
    widget.button.setChecked(False)
    widget.model.setText("fast")  # another model: the adaptations of the old one no longer apply
    assert widget.adapted == {} and "calibrate again" in widget._message


def test_a_calibration_collects_its_frames_in_the_acquisition_thread_with_the_gui_thread_blocked(
        napari_app, qt_core, tmp_path):
    """A core with Qt signals (as napari-micromanager's), the calibration's MDA run from a thread while the GUI thread
    waits and runs no event loop: every frame is collected in the acquisition thread (a direct connection), so the
    calibration does not depend on the event loop, and no event is left queued for a handler that is gone (through
    pymmcore-plus's output-handler relay, a one-field calibration beside napari-micromanager crashed napari)."""
    import threading

    import useq
    from test_live_session import identity_backbone

    from livedenoise.acquisition.mda_listeners import listening
    from livedenoise.attach import MDADenoiser
    from livedenoise.config import TrainingConfig

    threads: list[str] = []

    class Spy:
        def frameReady(self, image, event, meta=None):  # noqa: N802
            threads.append(threading.current_thread().name)

    den = MDADenoiser(identity_backbone().save(tmp_path / "identity.safetensors"))
    outcome: dict = {}

    def calibrate() -> None:
        try:
            with listening(qt_core.mda.events, Spy()):
                futures = den.calibrate(qt_core, useq.MDASequence(), [(0.0, 0.0)], average=2, time_budget_s=5,
                                        training=TrainingConfig(patch_size=32, batch_size=4, max_steps=3,
                                                                steps_per_validation=3))
            outcome["result"] = [f.result(timeout=300) for f in futures.values()]
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=calibrate, name="calibration-test")
    worker.start()
    worker.join(timeout=600)  # the GUI thread processes no events meanwhile
    den.close(progress=False)
    assert not worker.is_alive() and "error" not in outcome, outcome
    assert len(outcome["result"]) == 1 and outcome["result"][0].steps > 0, outcome
    assert threads == ["calibration-test"] * 3  # 1 + average frames, each heard in the acquisition thread
    for _ in range(20):  # events left queued for the GUI thread would run here
        napari_app.processEvents()
    assert threads == ["calibration-test"] * 3


def test_the_live_widget_passes_its_fixed_pattern_choice_to_the_calibration(napari_app, qt_core, tmp_path, monkeypatch):
    from napari.components import ViewerModel
    from test_live_session import identity_backbone

    from livedenoise.attach import MDADenoiser
    from livedenoise.napari_plugin.live import LiveDenoiseWidget

    asked: list[bool] = []

    def calibrate(self, core, sequence, positions, **kwargs):
        asked.append(kwargs["remove_fixed_pattern"])
        return {}

    monkeypatch.setattr(MDADenoiser, "calibrate", calibrate)
    widget = LiveDenoiseWidget(ViewerModel(), core=qt_core)
    widget.model.setText(str(identity_backbone().save(tmp_path / "identity.safetensors")))
    assert widget.remove_pattern.isChecked()  # on by default, as in live sessions
    for choice in (True, False):
        widget.remove_pattern.setChecked(choice)
        widget.calibrate().join(timeout=60)
    assert asked == [True, False]


def test_the_napari_example_runs_headless_with_calibration(napari_app, tmp_path):
    """examples/attach_napari.py: the widget attached to an MDA started in a thread (as napari-micromanager starts
    one), frames arriving through the event loop; each channel calibrated first; every frame recorded."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(PLUGIN.parent.parent / "examples" / "attach_napari.py"), "--headless",
                             "-o", str(tmp_path / "out"), "--time-points", "2", "--calibrate", "2",
                             "--calibrate-seconds", "5"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 denoised frames recorded" in result.stdout
    assert result.stdout.startswith("calibration: 5%: ") and "steps" in result.stdout
    assert any(p.name.startswith("denoised_001") for p in (tmp_path / "out").iterdir())


def test_the_live_widget_follows_napari_micromanager_s_core_and_detaches_when_its_dock_is_removed(
        napari_app, qt_core, tmp_path, monkeypatch):
    """napari-micromanager 0.3 makes its own core (not the global one): the widget takes the core of the
    napari-micromanager window docked in the viewer. napari's "close" of a dock only takes the widget out of it:
    that detaches, so a removed widget does not go on denoising. Attaching during an MDA says that MDA is skipped."""
    import types

    import useq
    from napari.components import ViewerModel
    from pymmcore_plus import CMMCorePlus
    from qtpy.QtWidgets import QWidget

    from livedenoise.napari_plugin.live import LiveDenoiseWidget, napari_micromanager_core

    main_window = type("MainWindow", (), {"__module__": "napari_micromanager.main_window", "core": qt_core})()
    other = type("Other", (), {"__module__": "somewhere_else", "core": object()})()
    dock = types.SimpleNamespace(widget=lambda: main_window)
    viewer = types.SimpleNamespace(window=types.SimpleNamespace(dock_widgets={"o": other, "Main Window": dock}))
    assert napari_micromanager_core(viewer) is qt_core
    assert napari_micromanager_core(ViewerModel()) is None
    assert LiveDenoiseWidget(ViewerModel()).core is CMMCorePlus.instance()

    widget = LiveDenoiseWidget(viewer)
    assert widget.core is qt_core
    widget.output.setText(str(tmp_path / "denoised"))
    widget.model.setText("fast")
    holder = QWidget()
    widget.setParent(holder)  # docked
    widget.button.setChecked(True)
    assert widget.attached and "global core" not in widget.status.text()
    widget.setParent(None)  # what napari's remove_dock_widget does
    assert not widget.attached
    _run_mda_like_napari_micromanager(napari_app, qt_core, useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    assert widget.last_report is None and not (tmp_path / "denoised").exists()  # nothing denoised or recorded

    monkeypatch.setattr(qt_core.mda, "is_running", lambda: True)
    widget.button.setChecked(True)
    assert widget.attached and "started before Attach and is not denoised" in widget.status.text()
    widget.button.setChecked(False)


def test_a_live_widget_destroyed_mid_mda_finishes_its_recording_and_denoises_nothing_more(napari_app, qt_core,
                                                                                          tmp_path):
    """Closing napari's window deletes its docked widgets without a closeEvent: the widget's deletion detaches it
    and finishes the running sequence's recording, which stays readable; later MDAs are not denoised."""
    import shiboken6
    import useq
    from napari.components import ViewerModel

    from livedenoise.io import open_dataset
    from livedenoise.napari_plugin.live import LiveDenoiseWidget

    widget = LiveDenoiseWidget(ViewerModel(), core=qt_core)
    widget.output.setText(str(tmp_path / "denoised"))
    widget.model.setText("fast")
    widget.button.setChecked(True)
    thread = qt_core.run_mda(useq.MDASequence(time_plan={"interval": 0.05, "loops": 40}))
    deadline = time.monotonic() + 120
    while (widget._denoiser is None or widget._denoiser.written < 3) and time.monotonic() < deadline:
        napari_app.processEvents()
        time.sleep(0.01)
    assert widget._denoiser is not None and thread.is_alive()  # mid-MDA
    shiboken6.delete(widget)  # what closing the viewer does to it
    assert widget._attached_core is None and widget._denoiser is None
    while thread.is_alive() and time.monotonic() < deadline:
        napari_app.processEvents()
        time.sleep(0.01)
    assert widget.wait_until_recorded(timeout=120)
    report = widget.last_report
    assert report is not None and 3 <= report.frames_written < 40
    ds = open_dataset(report.denoised_path)  # finished: its index written, readable
    assert int(np.prod(ds.shape[:-2])) == report.frames_written
    _run_mda_like_napari_micromanager(napari_app, qt_core, useq.MDASequence(time_plan={"interval": 0, "loops": 2}))
    assert widget.last_report is report
    assert sorted(p.name for p in (tmp_path / "denoised").iterdir()) == [Path(report.denoised_path).name]
