"""Checkpoints: one safetensors file, exact round trip, clear errors for every broken file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from livedenoise.checkpoint import (
    METADATA_KEY,
    Checkpoint,
    available_backbones,
    load_backbone,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from livedenoise.errors import CheckpointError
from livedenoise.models import build_model
from livedenoise.normalization import Normalizer

NORM = Normalizer(offset=100.0, gain=2.0, noise_b=-40.0, scale=25.0, saturation=4095.0)


def _save(tmp_path: Path, arch: str = "unet", name: str = "tiny", **kwargs) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    kwargs = kwargs or ({"widths": [4, 8]} if arch == "unet" else {"channels": 8, "heads": 2})
    model = build_model(arch, **kwargs)
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model, arch=arch, arch_kwargs=kwargs, normalizer=NORM,
                           training={"objective": "n2s", "lr": np.float32(1e-4), "window": 3},
                           metrics={"psnr": np.float64(31.5)}, name=name)
    return model, path


@pytest.mark.parametrize("arch", ["unet", "cnnt"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, arch: str) -> None:
    model, path = _save(tmp_path, arch)
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.arch == arch and ckpt.name == "tiny" and ckpt.path == path
    assert ckpt.normalizer == NORM
    assert not ckpt.model.training  # ready for inference
    x = torch.randn((1, 1, 3, 20, 24) if arch == "cnnt" else (1, 1, 20, 24))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ckpt.model(x))


def test_metadata_contents(tmp_path: Path) -> None:
    _, path = _save(tmp_path)
    meta = read_metadata(path)
    assert meta["arch"] == "unet" and meta["arch_kwargs"] == {"widths": [4, 8]}
    assert meta["normalizer"]["gain"] == 2.0
    assert meta["training"]["lr"] == pytest.approx(1e-4) and meta["training"]["window"] == 3
    assert meta["metrics"] == {"psnr": 31.5}
    assert set(meta["versions"]) == {"livedenoise", "torch", "numpy", "python"}
    assert meta["created"][:2] == "20"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))  # atomic write left nothing


def test_save_method_and_clone_are_independent(tmp_path: Path) -> None:
    _, path = _save(tmp_path)
    ckpt = load_checkpoint(path)
    twin = ckpt.clone(name="finetuned")
    with torch.no_grad():
        for p in twin.model.parameters():
            p.add_(1.0)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert not torch.equal(ckpt.model(x), twin.model(x))
    assert twin.metadata["parent"]["name"] == "tiny" and twin.path is None
    out = twin.save(tmp_path / "sub" / "ft.safetensors")
    again = load_checkpoint(out)
    assert again.name == "finetuned" and again.metadata["parent"]["name"] == "tiny"
    with torch.no_grad():
        assert torch.equal(again.model(x), twin.model.eval()(x))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.safetensors.*does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path: Path) -> None:
    _, path = _save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"noise\.safetensors"):
        load_checkpoint(path)


def test_pickle_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(build_model("unet", widths=[4]).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"legacy\.pt"):
        load_checkpoint(path)


def test_missing_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match=r"plain\.safetensors.*no 'livedenoise' metadata"):
        load_checkpoint(path)


def test_mismatched_weights(tmp_path: Path) -> None:
    model = build_model("unet", widths=[4, 8])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"arch": "unet", "arch_kwargs": {"widths": [8, 16]}, "normalizer": NORM.to_dict()}
    path = tmp_path / "mismatch.safetensors"
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"mismatch\.safetensors.*do not match.*wrong shape"):
        load_checkpoint(path)
    meta["arch_kwargs"] = {"widths": [4, 8, 16]}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_unknown_architecture_and_bad_normalizer(tmp_path: Path) -> None:
    path = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(2)}, str(path),
              metadata={METADATA_KEY: json.dumps({"arch": "vit", "arch_kwargs": {}, "normalizer": {}})})
    with pytest.raises(CheckpointError, match=r"odd\.safetensors.*cannot be built"):
        load_checkpoint(path)
    model = build_model("unet", widths=[4])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={METADATA_KEY: json.dumps({"arch": "unet", "arch_kwargs": {"widths": [4]},
                                                   "normalizer": {"gain": -1}})})
    with pytest.raises(CheckpointError, match="invalid normalizer"):
        load_checkpoint(path)
    path.write_bytes(b"")  # empty file
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_load_backbone_missing_lists_names() -> None:
    with pytest.raises(CheckpointError, match=r"'no-such-backbone'.*available backbones"):
        load_backbone("no-such-backbone")
    assert isinstance(available_backbones(), list)


@pytest.mark.parametrize("arch", ["unet", "cnnt"])
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(tmp_path: Path, arch: str) -> None:
    model, path = _save(tmp_path, arch, name="diverged")
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = float("nan")
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(read_metadata(path))})
    with pytest.raises(CheckpointError, match=rf"diverged.safetensors holds non-finite weights .* e\.g\. {first}"):
        load_checkpoint(path)


def test_tiny_file_declaring_a_huge_network_fails_on_shapes_without_building_it(tmp_path: Path) -> None:
    import resource

    model = build_model("unet", widths=[4, 8])
    meta = {"arch": "unet", "arch_kwargs": {"widths": [4096, 8192, 16384, 32768]}, "normalizer": NORM.to_dict()}
    path = tmp_path / "bomb.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={METADATA_KEY: json.dumps(meta)})
    assert path.stat().st_size < 10_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=r"bomb\.safetensors.*do not match"):
        load_checkpoint(path)
    # The declared network has ~10^10 parameters (tens of GB): nothing near that was ever allocated.
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 1_000_000, grown_kb


def test_the_lite_backbone_is_shipped_with_its_training_record() -> None:
    from livedenoise.checkpoint import load_backbone
    from livedenoise.modelspec import SHIPPED

    ck = load_backbone("lite")
    assert "lite" in SHIPPED and ck.name == "backbone-lite"
    assert list(ck.arch_kwargs["widths"]) == [8, 16, 32, 64, 128]
    stages = ck.training["stages"]
    assert len(stages) == 2 and sum(st["steps"] for st in stages) == ck.training["total_steps"] > 60_000
    assert all(st["data"]["held_out"] == ["straight_filaments"] for st in stages)  # the benchmarks' unseen structure
    assert stages[0]["data"]["seed"] != stages[1]["data"]["seed"]  # the second stage saw a new bank
