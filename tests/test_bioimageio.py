"""BioImage Model Zoo export and import: a valid package that denoises raw values, and the same network back."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import tifffile
import torch
import yaml

from livedenoise.bioimageio import (
    CHECKPOINT_ATTACHMENT,
    RawToDenoised,
    checkpoint_from_bioimageio,
    export_bioimageio,
    is_bioimageio_package,
    load_bioimageio,
)
from livedenoise.errors import CheckpointError, ConfigError, InputDataError
from livedenoise.normalization import Normalizer


@pytest.fixture(scope="module")
def scene():
    """A simulated 5-photon field (256², sCMOS camera model) with the sample it shows."""
    from livedenoise.evaluate import SimulatedTask

    task = SimulatedTask("filaments", 256)
    noisy, _ = task.test_set(5.0, 0, 1)
    return noisy[0], task.test_truth_flat(5.0, 0, 1)[0]


@pytest.fixture(scope="module")
def package(scene, tmp_path_factory):
    from livedenoise.cli import main

    folder = tmp_path_factory.mktemp("bmz")
    tifffile.imwrite(folder / "cells.tif", np.round(scene[0]).astype(np.uint16))
    out = folder / "cells-denoiser.zip"
    assert main(["export", "fast", "-o", str(out), "--sample", str(folder / "cells.tif"), "--author", "A. Tester",
                 "--name", "cells denoiser"]) == 0
    return out


def test_the_exported_package_is_valid_and_its_onnx_model_denoises_raw_camera_values(package, scene):
    import onnxruntime as ort
    from bioimageio.spec import load_description

    from livedenoise.metrics import score

    descr = load_description(package)  # bioimage.io's own validation, files and hashes included
    assert type(descr).__name__ == "ModelDescr" and descr.validation_summary.status == "valid-format"
    assert descr.name == "cells denoiser" and [a.name for a in descr.authors] == ["A. Tester"]
    assert str(descr.inputs[0].id) == "raw" and descr.weights.onnx is not None
    assert descr.weights.torchscript is not None  # what deepImageJ in Fiji runs
    with zipfile.ZipFile(package) as z:
        assert {"model.onnx", "model.torchscript.pt", "test_input.npy", "test_output.npy", "README.md", "cover.png",
                "rdf.yaml", CHECKPOINT_ATTACHMENT} <= set(z.namelist())
        z.extractall(package.parent / "unzipped")
    work = package.parent / "unzipped"
    test_in, test_out = np.load(work / "test_input.npy"), np.load(work / "test_output.npy")
    assert test_in.shape == test_out.shape == (1, 1, 256, 256) and test_in.dtype == np.float32
    session = ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"raw": test_in})[0]
    np.testing.assert_allclose(got, test_out, atol=1e-3 * float(np.ptp(test_out)))
    # it really denoises the raw camera values (the noise model is inside the graph)
    noisy, truth = scene
    assert score(truth, got[0, 0]).psnr > score(truth, noisy).psnr + 5
    # another size (a multiple of 8 above the declared minimum) and a batch of two run too
    pair = np.stack([test_in[0, :, :136, :144]] * 2)
    assert session.run(None, {"raw": pair})[0].shape == (2, 1, 136, 144)
    readme = (work / "README.md").read_text()
    assert "Noise model" in readme and "# Validation" in readme


def test_the_package_s_state_dict_weights_rebuild_from_their_description(package, tmp_path):
    """pytorch_state_dict weights: the architecture is livedenoise.bioimageio.raw_to_denoised with the kwargs the
    package records; the tensors-only state dict loads into it and gives the test output (what bioimageio.core does)."""
    import importlib

    from bioimageio.spec import load_description

    descr = load_description(package)
    weights = descr.weights.pytorch_state_dict
    assert weights is not None and str(weights.architecture.import_from) == "livedenoise.bioimageio"
    builder = getattr(importlib.import_module(weights.architecture.import_from), str(weights.architecture.callable))
    module = builder(**weights.architecture.kwargs)
    with zipfile.ZipFile(package) as z:
        z.extractall(tmp_path)
    module.load_state_dict(torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True))
    test_in, test_out = np.load(tmp_path / "test_input.npy"), np.load(tmp_path / "test_output.npy")
    with torch.inference_mode():
        got = module(torch.from_numpy(test_in)).numpy()
    np.testing.assert_allclose(got, test_out, atol=1e-4 * float(np.ptp(test_out)))
    assert "pytorch" in descr.tags


def test_a_package_comes_back_as_the_same_network_in_denoise_and_the_python_api(package, scene, tmp_path):
    from livedenoise.batch import denoise_dataset
    from livedenoise.io import open_dataset
    from livedenoise.modelspec import load_model_spec

    assert is_bioimageio_package(package) and not is_bioimageio_package(tmp_path)
    back = load_bioimageio(package)
    fast = load_model_spec("fast")
    assert back.name == fast.name
    for key, value in fast.model.state_dict().items():
        assert torch.equal(back.model.state_dict()[key], value)
    assert load_model_spec(package).name == fast.name  # what --model / --backbone resolve
    tifffile.imwrite(tmp_path / "frame.tif", np.round(scene[0]).astype(np.uint16))
    denoise_dataset([tmp_path / "frame.tif"], tmp_path / "from-zip", model=str(package), progress=False, device="cpu")
    denoise_dataset([tmp_path / "frame.tif"], tmp_path / "from-fast", model="fast", progress=False, device="cpu")
    a = open_dataset(tmp_path / "from-zip" / "frame.ome.tif").reader[...]
    b = open_dataset(tmp_path / "from-fast" / "frame.ome.tif").reader[...]
    np.testing.assert_allclose(a, b, atol=1e-4)  # the noise model is refitted to the data either way


def test_a_stored_noise_model_needs_no_sample_and_export_refuses_what_it_cannot_package(tmp_path, scene):
    from livedenoise.modelspec import load_model_spec

    fast = load_model_spec("fast")
    fast.normalizer = Normalizer(offset=100.0, gain=2.0, noise_b=4.0, scale=fast.normalizer.scale)
    out = export_bioimageio(fast, tmp_path / "stored.zip", noise_model="stored")
    assert load_bioimageio(out).normalizer == fast.normalizer  # kept, not refitted
    with pytest.raises(ConfigError, match="exists"):
        export_bioimageio(fast, out, noise_model="stored")
    with pytest.raises(ConfigError, match=r"not allowed by bioimage.io.*not '\.'"):
        export_bioimageio(fast, tmp_path / "named.zip", noise_model="stored", name="cells v1.2")
    fast.name = "my.model/v2"  # a checkpoint name bioimage.io would refuse becomes an allowed title
    from bioimageio.spec import load_description

    assert load_description(export_bioimageio(fast, tmp_path / "titled.zip", noise_model="stored")).name == \
        "livedenoise my-model-v2"
    with pytest.raises(ConfigError, match=r"\.zip"):
        export_bioimageio("fast", tmp_path / "model.safetensors", sample=scene[0])
    with pytest.raises(ConfigError, match="--sample"):
        export_bioimageio("fast", tmp_path / "nosample.zip")
    with pytest.raises(ConfigError, match="temporal"):
        export_bioimageio("temporal", tmp_path / "t.zip", sample=scene[0])
    with pytest.raises(InputDataError, match="at least 136x136"):
        export_bioimageio("fast", tmp_path / "small.zip", sample=scene[0][:100, :100])
    with pytest.raises(InputDataError, match="NaN"):
        export_bioimageio("fast", tmp_path / "nan.zip", sample=np.full((256, 256), np.nan, np.float32))
    maps = fast.normalizer.copy(pixel_offset=np.zeros((8, 8)), pixel_gain=np.ones((8, 8)))
    with pytest.raises(ConfigError, match="per-pixel"):
        RawToDenoised(fast.model, maps)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["stored.zip", "titled.zip"]  # nothing left behind


def test_foreign_or_tampered_packages_are_refused_in_one_sentence(package, tmp_path):
    with zipfile.ZipFile(package) as z:
        names = z.namelist()
        files = {n: z.read(n) for n in names}
    # a package livedenoise did not export: no checkpoint attachment
    rdf = yaml.safe_load(files["rdf.yaml"])
    rdf.pop("attachments")
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        for n, data in files.items():
            if n != CHECKPOINT_ATTACHMENT:
                z.writestr(n, yaml.safe_dump(rdf) if n == "rdf.yaml" else data)
    with pytest.raises(CheckpointError, match="not exported by livedenoise"):
        checkpoint_from_bioimageio(foreign, cache_folder=tmp_path / "cache")
    # a changed checkpoint: its sha256 no longer matches the description
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as z:
        for n, data in files.items():
            z.writestr(n, data + b"\0" if n == CHECKPOINT_ATTACHMENT else data)
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoint_from_bioimageio(tampered, cache_folder=tmp_path / "cache")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    assert not is_bioimageio_package(broken)
    from livedenoise.modelspec import load_model_spec

    with pytest.raises(CheckpointError, match="not a BioImage Model Zoo package"):
        load_model_spec(broken)  # what --model broken.zip gets: one sentence, not a safetensors parse error


def test_saturated_pixels_pass_through_the_exported_graph():
    from livedenoise.models import build_model

    net = build_model("unet", widths=[4, 8]).eval()
    norm = Normalizer(offset=100.0, gain=2.0, noise_b=4.0, scale=10.0, saturation=1000.0)
    x = torch.full((1, 1, 16, 16), 300.0)
    x[0, 0, 4:6, 4:6] = 1000.0
    with torch.inference_mode():
        y = RawToDenoised(net, norm)(x)
    assert torch.equal(y[0, 0, 4:6, 4:6], x[0, 0, 4:6, 4:6])
    assert not torch.equal(y[0, 0, :2, :2], x[0, 0, :2, :2])


# ---------------------------------------------------------------------------------------------
# another tool's package as --model (livedenoise.bioimageio_import)
# ---------------------------------------------------------------------------------------------
def _foreign(package, folder, name="foreign.zip", edit=None, extra=None):
    """``package`` as another tool would ship it: no livedenoise checkpoint; ``edit(rdf)`` changes its description,
    ``extra`` adds files."""
    with zipfile.ZipFile(package) as z:
        files = {n: z.read(n) for n in z.namelist() if n != CHECKPOINT_ATTACHMENT} | dict(extra or {})
    rdf = yaml.safe_load(files.pop("rdf.yaml"))
    rdf.pop("attachments")
    if edit is not None:
        edit(rdf)
    out = folder / name
    with zipfile.ZipFile(out, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
        z.writestr("rdf.yaml", yaml.safe_dump(rdf))
    return out


def test_another_tools_package_runs_as_model_in_denoise_and_the_api(package, scene, tmp_path, capsys):
    from livedenoise.bioimageio_import import FOREIGN_ARCH, is_foreign_package
    from livedenoise.cli import main
    from livedenoise.inference import Denoiser
    from livedenoise.io import read_provenance
    from livedenoise.modelspec import load_model_spec
    from livedenoise.training.finetune import finetune

    foreign = _foreign(package, tmp_path)
    assert is_foreign_package(foreign) and not is_foreign_package(package)
    ckpt = load_model_spec(foreign, foreign=True)
    assert ckpt.arch == FOREIGN_ARCH and ckpt.name == "cells denoiser"
    assert ckpt.metadata["foreign"]["weights"] == "torchscript"
    frame = np.round(scene[0][:250, :230]).astype(np.uint16)  # sizes the package's step does not divide
    ours = Denoiser(load_bioimageio(package), device="cpu").denoise(frame)  # the same network, from its checkpoint
    theirs = Denoiser(str(foreign), device="cpu").denoise(frame)
    assert theirs.shape == frame.shape
    # the same values beyond the reach of the borders (a foreign network's frame is mirrored by its reach first)
    np.testing.assert_allclose(theirs[48:-48, 48:-48], ours[48:-48, 48:-48], atol=1e-3 * float(np.ptp(ours)))
    tifffile.imwrite(tmp_path / "cells.tif", frame)
    assert main(["denoise", str(tmp_path / "cells.tif"), "-o", str(tmp_path / "out"), "--model", str(foreign),
                 "--device", "cpu"]) == 0
    assert "none fitted: a BioImage Model Zoo model" in capsys.readouterr().out
    written = tifffile.imread(tmp_path / "out" / "cells.ome.tif")
    np.testing.assert_allclose(written, theirs, atol=1e-3 * float(np.ptp(ours)))
    assert read_provenance(tmp_path / "out" / "cells.ome.tif")["model"]["arch"] == FOREIGN_ARCH
    # options that only make sense with a noise model say they were not used, rather than seeming to apply
    assert main(["denoise", str(tmp_path / "cells.tif"), "-o", str(tmp_path / "strict"), "--model", str(foreign),
                 "--device", "cpu", "--strict"]) == 0
    assert "--strict not used with 'cells denoiser': a BioImage Model Zoo model" in capsys.readouterr().out
    # it runs as it is: no fine-tuning, in batch or from Python
    assert main(["denoise", str(tmp_path / "cells.tif"), "-o", str(tmp_path / "out2"), "--model", str(foreign),
                 "--adapt", "self"]) == 2
    assert "is a BioImage Model Zoo model run as it is; fine-tuning needs a livedenoise backbone" in (
        capsys.readouterr().err)
    with pytest.raises(CheckpointError, match="run as it is"):
        finetune(ckpt, [frame])
    # the loaded model from Python: the same raw-value run, never a noise model of the data in front of it
    from livedenoise.arrays import denoise_array
    from livedenoise.batch import denoise_dataset

    denoise_dataset([tmp_path / "cells.tif"], tmp_path / "api", model=ckpt, progress=False, device="cpu")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "api" / "cells.ome.tif"), theirs,
                               atol=1e-3 * float(np.ptp(ours)))
    with pytest.raises(ConfigError, match="takes no normalizer"):
        Denoiser(ckpt, normalizer=Normalizer(offset=100.0, gain=2.0), device="cpu")
    with pytest.raises(CheckpointError, match="denoise_array"):
        denoise_array(frame, ckpt)


def test_fixed_processing_is_folded_in_and_what_tiling_cannot_reproduce_is_refused(package, tmp_path):
    from livedenoise.bioimageio_import import load_foreign_bioimageio

    def steps(rdf):
        rdf["inputs"][0]["preprocessing"] = [{"id": "fixed_zero_mean_unit_variance",
                                              "kwargs": {"mean": 100.0, "std": 4.0}}]
        rdf["outputs"][0]["postprocessing"] = [{"id": "scale_linear", "kwargs": {"gain": 2.0, "offset": 1.0}},
                                               {"id": "clip", "kwargs": {"min": 0.0, "max": 500.0}}]

    model = load_foreign_bioimageio(_foreign(package, tmp_path, "steps.zip", steps)).model
    x = 100 + 20 * torch.rand(1, 1, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.clamp(2.0 * model.net((x - 100.0) / 4.0) + 1.0, 0.0, 500.0)
        np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)

    # the state-dict weights, their architecture imported from an installed library (here livedenoise itself)
    def state_dict_only(rdf):
        rdf["weights"] = {"pytorch_state_dict": rdf["weights"]["pytorch_state_dict"]}

    sd = load_foreign_bioimageio(_foreign(package, tmp_path, "sd.zip", state_dict_only))
    torchscript = load_foreign_bioimageio(_foreign(package, tmp_path, "ts.zip"))
    assert sd.metadata["foreign"]["weights"] == "pytorch_state_dict"
    with torch.no_grad():
        np.testing.assert_allclose(sd.model(x).numpy(), torchscript.model(x).numpy(), rtol=1e-4, atol=1e-3)

    def per_row(rdf):
        rdf["inputs"][0]["preprocessing"] = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x"]}}]

    def output_statistics(rdf):  # bioimageio.core computes statistics before the network runs: it cannot either
        rdf["outputs"][0]["postprocessing"] = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}]

    def output_percentiles(rdf):
        rdf["outputs"][0]["postprocessing"] = [{"id": "scale_range", "kwargs": {
            "axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.0,
            "reference_tensor": rdf["outputs"][0]["id"]}}]

    def mean_variance(rdf):
        rdf["outputs"][0]["postprocessing"] = [{"id": "scale_mean_variance",
                                                "kwargs": {"reference_tensor": rdf["inputs"][0]["id"]}}]

    def sigmoid(rdf):
        rdf["outputs"][0]["postprocessing"] = [{"id": "sigmoid"}]

    def no_runnable_weights(rdf):
        rdf["weights"] = {"keras_hdf5": {"source": "model.onnx", "tensorflow_version": "2.15"}}

    def missing_library(rdf):  # CAREamics' U-Net, CAREamics not being installed in the test environment
        state_dict_only(rdf)
        rdf["weights"]["pytorch_state_dict"]["architecture"].update(import_from="careamics.models.unet",
                                                                    callable="UNet", kwargs={})

    def any_module(rdf):  # a package must not make livedenoise import and call whatever it names
        state_dict_only(rdf)
        rdf["weights"]["pytorch_state_dict"]["architecture"].update(
            import_from="subprocess", callable="run", kwargs={"args": ["touch", str(tmp_path / "ran")]})

    def volume(rdf):
        rdf["inputs"][0]["axes"].insert(2, {"type": "space", "id": "z", "size": {"min": 8, "step": 8}})

    for edit, message in ((per_row, "statistics over axes x; livedenoise computes them over each whole frame"),
                          (output_statistics, "statistics of 'the output'; livedenoise .* input image only"),
                          (output_percentiles, "reference_tensor`s \\['denoised'\\] not found"),
                          (mean_variance, "'scale_mean_variance' matches another tensor's statistics"),
                          (sigmoid, "step 'sigmoid' is not supported"),
                          (no_runnable_weights, "has keras_hdf5 weights; livedenoise runs TorchScript, PyTorch "
                                                "state-dict or ONNX"),
                          (missing_library, "needs the Python package 'careamics' installed here"),
                          (any_module, "builds state-dict networks only from careamics, torch.nn, livedenoise"),
                          (volume, "single-channel 2-D images")):
        with pytest.raises(CheckpointError, match=message):
            load_foreign_bioimageio(_foreign(package, tmp_path, f"{edit.__name__}.zip", edit))
    assert not (tmp_path / "ran").exists()

    def two_clips(rdf):  # disjoint ranges: clipping to [0, 1] then to [2, 3] leaves 2 everywhere
        rdf["outputs"][0]["postprocessing"] = [{"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}},
                                               {"id": "clip", "kwargs": {"min": 2.0, "max": 3.0}}]

    clipped = load_foreign_bioimageio(_foreign(package, tmp_path, "clips.zip", two_clips)).model
    with torch.no_grad():
        assert torch.all(clipped(x) == 2.0)


def test_an_onnx_only_package_runs_in_onnx_runtime_with_the_same_output_and_reach(package, scene, tmp_path):
    from livedenoise.bioimageio_import import OnnxNetwork, load_foreign_bioimageio
    from livedenoise.inference import Denoiser

    def onnx_only(rdf):
        rdf["weights"] = {"onnx": rdf["weights"]["onnx"]}

    onnx = _foreign(package, tmp_path, "onnx.zip", onnx_only)
    ckpt = load_foreign_bioimageio(onnx)
    assert isinstance(ckpt.model.net, OnnxNetwork) and ckpt.metadata["foreign"]["weights"] == "onnx"
    torchscript = load_foreign_bioimageio(_foreign(package, tmp_path, "ts.zip"))
    # ONNX Runtime has no gradients: the reach is measured by changing far pixels, and agrees with the gradients'
    from livedenoise.bioimageio_import import _AtLevel
    from livedenoise.models import empirical_receptive_field_radius

    reach = ckpt.model.receptive_field_radius()
    assert reach == torchscript.model.receptive_field_radius() == empirical_receptive_field_radius(
        _AtLevel(torchscript.model)) > 0
    frame = np.round(scene[0][:250, :230]).astype(np.uint16)
    expected = Denoiser(torchscript, device="cpu").denoise(frame)
    got = Denoiser(str(onnx), device="cpu", pixel_budget=96 * 96).denoise(frame)  # tiles, batched per tile shape
    np.testing.assert_allclose(got, expected, atol=1e-3 * float(np.ptp(expected)))


def test_statistics_of_each_frame_are_the_raw_frames_and_such_a_model_is_never_tiled(package, scene, tmp_path):
    from livedenoise.bioimageio_import import ImageStatistic, load_foreign_bioimageio
    from livedenoise.inference import Denoiser

    # bioimageio.core's rule: every statistic is the input's as given, whichever step uses it
    x = 100 + 20 * torch.rand(2, 1, 40, 50, generator=torch.Generator().manual_seed(1))
    raw = x.double()
    mean, std = raw.mean(dim=(-2, -1), keepdim=True), raw.std(dim=(-2, -1), correction=0, keepdim=True)
    np.testing.assert_allclose(ImageStatistic("zero_mean_unit_variance").apply(2 * x, x).numpy(),
                               ((2 * raw - mean) / (std + 1e-6)).numpy(), rtol=1e-5, atol=1e-5)
    flat = raw.numpy().reshape(2, -1)
    lo, hi = np.percentile(flat, [2.0, 98.0], axis=1)
    scaled = ImageStatistic("scale_range", 2.0, 98.0).apply(x, x).numpy()
    np.testing.assert_allclose(scaled, (raw.numpy() - lo[:, None, None, None]) / (hi - lo + 1e-6)[:, None, None, None],
                               rtol=1e-5, atol=1e-5)
    clipped = ImageStatistic("clip", 2.0, 98.0, high=110.0).apply(x, x).numpy()
    assert np.allclose(clipped.reshape(2, -1).min(axis=1), lo) and clipped.max() <= 110.0 + 1e-4

    def per_image(rdf):
        rdf["inputs"][0]["preprocessing"] = [
            {"id": "clip", "kwargs": {"axes": ["y", "x"], "min_percentile": 0.5, "max_percentile": 99.5}},
            {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}},
            {"id": "scale_linear", "kwargs": {"gain": 20.0, "offset": 110.0}}]
        rdf["outputs"][0]["postprocessing"] = [{"id": "scale_range", "kwargs": {
            "axes": ["batch", "y", "x"], "min_percentile": 1.0, "max_percentile": 99.5,
            "reference_tensor": rdf["inputs"][0]["id"]}}]

    stats = _foreign(package, tmp_path, "stats.zip", per_image)
    model = load_foreign_bioimageio(stats).model
    assert model.whole_frames and model.receptive_field_radius() > 0
    frame = np.round(np.tile(scene[0], (2, 2))[:400, :352]).astype(np.uint16)
    f = frame.astype(np.float64)
    p_lo, p_hi = np.percentile(f, [0.5, 99.5])
    clipped = np.clip(f, p_lo, p_hi)
    z = (clipped - f.mean()) / (f.std() + 1e-6) * 20 + 110
    with torch.no_grad():
        y = model.net(torch.from_numpy(z.astype(np.float32))[None, None])[0, 0].double().numpy()
    q_lo, q_hi = np.percentile(f, [1.0, 99.5])
    expected = (y - q_lo) / (q_hi - q_lo + 1e-6)
    # a budget that would cut the frame into 16 tiles: each would take its own statistics; it runs whole
    got = Denoiser(str(stats), device="cpu", pixel_budget=100 * 100, tile_size=128).denoise(frame)
    with torch.no_grad():
        whole = model(torch.from_numpy(frame.astype(np.float32))[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, whole, atol=1e-5 * float(np.ptp(expected)))
    inner = (slice(64, -64), slice(64, -64))  # beyond the mirrored borders, the formulas by hand
    np.testing.assert_allclose(got[inner], expected[inner], atol=1e-4 * float(np.ptp(expected)))
    tiled = Denoiser(load_foreign_bioimageio(_foreign(package, tmp_path, "plain.zip")), device="cpu",
                     pixel_budget=100 * 100)
    assert tiled._tiles(tiled._engine, 400, 352, 1) is not None  # the same budget does tile a plain package


def test_another_tools_package_denoises_a_napari_layer_as_it_is(package, scene, tmp_path):
    from livedenoise.inference import Denoiser
    from livedenoise.napari_plugin.work import denoise_layer_data

    foreign = _foreign(package, tmp_path)
    stack = np.round(scene[0][:2 * 96].reshape(2, 96, -1)).astype(np.uint16)  # two planes of a layer
    (data, kwargs, kind), warnings = denoise_layer_data(stack, "cells", str(foreign), placement={"scale": (1, .5, .5)})
    expected = Denoiser(str(foreign), device="cpu").denoise(stack[1])
    assert kind == "image" and data.shape == stack.shape and kwargs["scale"] == (1, .5, .5)
    np.testing.assert_allclose(data[1], expected, atol=1e-3 * float(np.ptp(expected)))
    meta = kwargs["metadata"]["livedenoise"]
    assert meta["model"] == "cells denoiser" and meta["noise_model"] is None
    assert warnings and "run as it is, on the raw values, with no noise model fitted" in warnings[0]


def test_another_tools_package_is_refused_where_livedenoise_would_fine_tune_or_fit_it(package, scene, tmp_path,
                                                                                      capsys):
    from livedenoise.cli import main
    from livedenoise.modelspec import load_model_spec

    foreign = _foreign(package, tmp_path)
    with pytest.raises(CheckpointError, match="runs only as it is, with `livedenoise denoise --model`"):
        load_model_spec(foreign)
    assert load_model_spec(foreign, foreign=True).name == "cells denoiser"
    tifffile.imwrite(tmp_path / "cells.tif", np.round(scene[0]).astype(np.uint16))
    for command in (["finetune", "--images", str(tmp_path / "cells.tif"), "--backbone", str(foreign), "-o",
                     str(tmp_path / "m.safetensors")],
                    ["export", str(foreign), "-o", str(tmp_path / "again.zip")]):
        assert main(command) == 2, command
        assert "runs only as it is" in capsys.readouterr().err, command
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "again.zip").exists()


def test_another_tools_package_denoises_an_attached_acquisition_as_it_is_and_is_never_adapted(package, scene,
                                                                                               tmp_path):
    """``AttachedDenoiser`` / ``MDADenoiser`` with a foreign package: every recorded frame is the package run on the raw
    frame (no noise model fitted, and the report says so); adapting it, or calibrating for it, is one sentence, raised
    before any frame is acquired."""
    from livedenoise.attach import AttachedDenoiser, MDADenoiser, PycromanagerDenoiser
    from livedenoise.attach.denoiser import FOREIGN_NOISE
    from livedenoise.inference import Denoiser
    from livedenoise.io import open_dataset

    foreign = _foreign(package, tmp_path)
    rng = np.random.default_rng(3)
    frames = [np.clip(np.round(scene[0] + rng.normal(0, 2, scene[0].shape)), 0, 65535).astype(np.uint16)[:128, :160]
              for _ in range(3)]
    den = AttachedDenoiser(str(foreign), output=tmp_path / "rec", device="cpu")
    for t, frame in enumerate(frames):
        assert den.submit(frame, {"time": t})
    report = den.close(progress=False)
    assert report.frames_written == 3 and not report.errors, report
    channel = report.channels["(all)"]
    assert channel["noise_model"] == FOREIGN_NOISE and channel["model"] == "cells denoiser"
    recorded = open_dataset(report.denoised_path)  # recorded in the frames' type (uint16), rounded
    expected = Denoiser(str(foreign), device="cpu")
    for t, frame in enumerate(frames):
        got, want = recorded.read_frame([t]).astype(np.float64), np.clip(np.rint(expected.denoise(frame)), 0, 65535)
        assert np.abs(got - want).max() <= 1 and np.mean(got != want) < 0.01
        assert np.abs(got - frame).mean() > 1  # denoised, not the raw frame
    with AttachedDenoiser(str(foreign), device="cpu") as live:
        with pytest.raises(CheckpointError, match="run as it is; adapting it needs a livedenoise backbone"):
            live.adapt(frames[:2], frames[:2])
    with MDADenoiser(str(foreign), device="cpu") as mda, pytest.raises(
            CheckpointError, match=r"run as it is; a calibration \(it fine-tunes the model\) needs a livedenoise"):
        mda.calibrate(None, None, [(0.0, 0.0)])  # refused before the core is touched
    with PycromanagerDenoiser(str(foreign), device="cpu") as pycro, pytest.raises(
            CheckpointError, match=r"run as it is; a calibration \(it fine-tunes the model\) needs a livedenoise"):
        pycro.calibrate([(0.0, 0.0)], tmp_path / "calibration")
    assert not (tmp_path / "calibration").exists()  # nothing acquired, not even its folder


def test_a_state_dict_network_of_an_installed_library_runs_in_inference_mode(package, tmp_path):
    """A network whose layers behave differently in training (batch normalisation, as in CAREamics' U-Net) gives
    its inference-mode output through the Denoiser: the receptive-field probe must not leave it in training mode."""
    import io

    from livedenoise.inference import Denoiser

    bn = torch.nn.BatchNorm2d(1)
    with torch.no_grad():
        bn.running_mean.fill_(100.0)
        bn.running_var.fill_(16.0)
        bn.weight.fill_(2.0)
        bn.bias.fill_(5.0)
    buffer = io.BytesIO()
    torch.save(bn.state_dict(), buffer)

    def batch_norm(rdf):
        rdf["weights"] = {"pytorch_state_dict": {
            "source": "bn.pt", "pytorch_version": torch.__version__.split("+")[0],
            "architecture": {"callable": "BatchNorm2d", "import_from": "torch.nn", "kwargs": {"num_features": 1}}}}

    foreign = _foreign(package, tmp_path, "bn.zip", batch_norm, {"bn.pt": buffer.getvalue()})
    frame = (100 + 8 * np.random.default_rng(0).standard_normal((150, 170))).astype(np.float32)
    out = Denoiser(str(foreign), device="cpu").denoise(frame)
    expected = (frame - 100.0) / np.sqrt(16.0 + bn.eps) * 2.0 + 5.0
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
