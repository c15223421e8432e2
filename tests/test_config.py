"""Configuration: defaults load, presets resolve, and invalid values fail with file + key + what is allowed."""
from __future__ import annotations

import pytest

from livedenoise.config import load_settings
from livedenoise.errors import ConfigError
from simulators.config import CameraConfig, SimulatorConfigError, available_camera_presets, load_camera_preset, load_microscope_config


def test_defaults_and_presets_load():
    s = load_settings()
    assert isinstance(s.microscope.camera, CameraConfig) and s.microscope.camera.name == "andor-zyla-4.2"
    assert s.training.patience == 8 and s.training.lr_pretrain == 1e-3 and s.training.lr_self_supervised == 1e-4
    assert {"andor-zyla-4.2", "generic-16bit-scmos"} <= set(available_camera_presets())
    assert load_camera_preset("generic-16bit-scmos").bit_depth == 16


@pytest.mark.parametrize(
    "text, match",
    [
        ("[live]\nfinetune_time_budget_s = -3\n", r"live\.finetune_time_budget_s.*greater than 0"),
        ("[training]\npatch_szie = 64\n", r"unknown key 'training\.patch_szie'"),
        ("[training]\nloss = 'l3'\n", r"training\.loss.*'l2' or 'l1'"),
        ("[microscope]\nexposure_ms = -5\n", r"exposure_ms.*greater than 0"),
        ("[microscope]\ncamera = 'nikon-9000'\n", r"unknown camera preset 'nikon-9000'.*andor-zyla-4.2"),
        ("[live]\ncalibration_positions = 'five'\n", r"calibration_positions.*integer"),
        ("this is = = not toml", r"not valid TOML"),
    ],
)
def test_invalid_settings_name_file_key_and_allowed(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_settings(path)
    assert "bad.toml" in str(info.value)


def test_microscope_overrides_and_errors(tmp_path):
    cfg = load_microscope_config(roi_width=64, roi_height=48)
    assert (cfg.roi_width, cfg.roi_height) == (64, 48)
    with pytest.raises(SimulatorConfigError, match="light_power"):
        load_microscope_config(light_power=150)
    with pytest.raises(SimulatorConfigError, match="not found"):
        load_microscope_config(tmp_path / "nope.toml")
