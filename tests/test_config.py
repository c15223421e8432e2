"""Configuration: defaults load, presets resolve, and invalid values fail with file + key + what is allowed."""
from __future__ import annotations

import re

import pytest

from livedenoise.commands.settings import load_settings
from livedenoise.errors import ConfigError
from simulators.config import (
    CameraConfig,
    SimulatorConfigError,
    available_camera_presets,
    load_camera_preset,
    load_microscope_config,
)


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
        ("[live]\ninterval_ms = inf\n", r"live\.interval_ms.*finite number"),  # used to hang `demo`
        ("[live]\nfinetune_time_budget_s = inf\n", r"finetune_time_budget_s.*finite number"),
        ("[training]\nlr_pairs = nan\n", r"training\.lr_pairs.*finite number"),
        ("[live]\nprecision = 'int8'\n", r"live\.precision.*'auto', 'fp32', 'bf16' or 'fp16'"),
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


@pytest.mark.parametrize("argv, match", [
    (["denoise", "x.tif", "-o", "out", "--adapt", "self", "--adapt-time", "0"],
     r"--adapt-time: 0 must be a number of seconds greater than 0"),
    (["denoise", "x.tif", "-o", "out", "--adapt", "self", "--adapt-frames", "0"],
     r"--adapt-frames: 0 must be between 1 and 10000"),
    (["denoise", "x.tif", "-o", "out", "--workers", "-1"], r"--workers: -1 must be between 1 and 256"),
    (["pretrain", "-o", "m.safetensors", "--batch-size", "0"], r"--batch-size: 0 must be between 1 and 512"),
    (["pretrain", "-o", "m.safetensors", "--lr", "-1"], r"--lr: -1 must be a number greater than 0"),
    (["pretrain", "-o", "m.safetensors", "--image-size", "0"], r"--image-size: 0 must be between 16 and 4096"),
    (["pretrain", "-o", "m.safetensors", "--time-budget", "inf"], r"--time-budget: inf must be a number of seconds"),
    (["calibrate-camera", "--simulate", "-o", "c.safetensors", "--frames", "100000"],
     r"--frames: 100000 must be between 2"),
    (["calibrate-camera", "--simulate", "-o", "c.safetensors", "--frames", "0"], r"--frames: 0 must be between 2"),
    (["finetune", "--time-budget", "abc"], r"'abc' is not a number of seconds"),
])
def test_bad_command_line_numbers_get_one_sentence_and_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    from livedenoise.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err and not list(tmp_path.iterdir())  # nothing written


def test_odd_paths_and_command_line_values_are_named_in_one_sentence(tmp_path, capsys, monkeypatch):
    from livedenoise.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b"\xff\xfe[live]\n")
    cases = [
        (["denoise", "/dev/null", "-o", "out"], "/dev/null: not a regular file or folder"),
        (["demo", "--config", "latin1.toml", "-o", "out"], "latin1.toml: not valid TOML (the file is not UTF-8 text)"),
        (["simulate", "-o", "out", "--exposure-ms", "-3"],
         "command line: key 'exposure_ms': Input should be greater than 0"),
        (["calibrate-camera", "--simulate", "--frames", "4", "-o", "latin1.toml/cal.safetensors"],
         "Cannot write to the output folder latin1.toml: latin1.toml is a file, not a folder"),
        (["pretrain", "--time-budget", "1", "-o", "latin1.toml/m.safetensors"], "latin1.toml is a file, not a folder"),
        # refused before a session writes anything, naming the option typed (not the config key behind it)
        (["demo", "--roi", "1x1", "-o", "out"], "--roi 1x1: each side must be at least 32 pixels"),
        (["demo", "--finetune-seconds", "-1", "-o", "out"],
         "command line: --finetune-seconds: Input should be greater than 0"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
        assert "microscope.toml" not in err
    assert not (tmp_path / "out").exists()


def test_the_library_never_imports_the_command_line_layer():
    """One-way layers: livedenoise.commands / livedenoise.cli use the library, never the other way round."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "livedenoise"
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("commands/") or rel == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{rel}: {n}" for n in names if n.startswith(("livedenoise.commands", "livedenoise.cli"))]
    assert not offenders, offenders


def test_session_settings_read_without_the_simulator_and_equal_the_shipped_file(tmp_path):
    """The product reads [training] and [live] itself (a [microscope] table is the simulator's, skipped here); the
    shipped session.toml holds exactly the code defaults, so an installed wheel without it behaves the same."""
    from pathlib import Path

    from livedenoise.config import SessionSettings, load_session_settings

    shipped = Path(__file__).resolve().parent.parent / "config" / "session.toml"
    assert load_session_settings(shipped) == SessionSettings()
    path = tmp_path / "s.toml"
    path.write_text("[microscope]\nexposure_ms = 5\n[live]\nexposure_ms = 30\nlight_power = 12.5\n")
    s = load_session_settings(path)
    assert (s.live.exposure_ms, s.live.light_power) == (30.0, 12.5) and not hasattr(s, "microscope")
    path.write_text("[live]\nlight_power = 150\n")
    with pytest.raises(ConfigError, match=r"s\.toml: key 'live\.light_power'.*less than or equal to 100"):
        load_session_settings(path)
    # the simulated commands fill the live illumination from the simulated microscope, unless [live] sets it
    path.write_text("[microscope]\nexposure_ms = 5\nlight_power = 3\n[live]\nlight_power = 9\n")
    sim = load_settings(path).for_simulator()
    assert (sim.live.exposure_ms, sim.live.light_power) == (5.0, 9.0)


def test_acquisition_inference_and_attach_never_import_the_simulator():
    """The code that runs at a real microscope receives the simulator's light control and truth by injection."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "livedenoise"
    offenders = []
    for path in [*root.joinpath("acquisition").rglob("*.py"), *root.joinpath("attach").rglob("*.py"),
                 root / "inference.py", root / "noise_model.py", root / "normalization.py", root / "config.py",
                 *root.joinpath("batch").rglob("*.py"), root / "checkpoint.py", root / "calibration.py",
                 root / "swap_check.py", *root.joinpath("io").rglob("*.py"), root / "arrays.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.startswith("simulators")]
    assert not offenders, offenders


def test_only_the_napari_plugin_imports_napari():
    """napari is an optional extra: the core install, the command line and the README's commands never need it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "livedenoise"
    offenders = []
    for path in root.rglob("*.py"):
        if "napari_plugin" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(root)}: {n}" for n in names
                          if n.split(".")[0] in ("napari", "magicgui") or n.startswith("livedenoise.napari_plugin")]
    assert not offenders, offenders


def test_the_simulator_never_imports_livedenoise():
    """simulators/ is a microscope, usable without livedenoise; the command layer joins the two."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "simulators"
    offenders, files = [], list(root.rglob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] == "livedenoise"]
    assert len(files) > 5 and not offenders, offenders


def test_errors_are_also_the_matching_built_in_exceptions():
    """An API user's ``except ValueError`` / ``except OSError`` catches livedenoise's errors where they fit."""
    from livedenoise.errors import BatchIncomplete, CheckpointError, InputDataError, MicroManagerUnavailable
    from livedenoise.modelspec import model_path

    assert issubclass(InputDataError, ValueError) and issubclass(CheckpointError, ValueError)
    assert issubclass(MicroManagerUnavailable, ConnectionError) and issubclass(MicroManagerUnavailable, OSError)
    assert issubclass(BatchIncomplete, RuntimeError)
    with pytest.raises(ValueError, match="neither a shipped backbone"):
        model_path("no-such-model.safetensors")
    assert str(MicroManagerUnavailable("no core")) == "no core"

def test_the_top_level_namespace_exports_the_user_facing_names_lazily():
    """``from livedenoise import ...`` works for every name in ``__all__``; ``import livedenoise`` alone loads no
    torch."""
    import subprocess
    import sys

    import livedenoise

    for name in livedenoise.__all__:
        assert getattr(livedenoise, name) is not None, name
    assert livedenoise.Denoiser.__module__ == "livedenoise.inference"
    assert issubclass(livedenoise.ConfigError, ValueError)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        livedenoise.Nope  # noqa: B018
    code = "import sys, livedenoise; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_the_second_pass_is_on_by_default_and_off_from_the_file_or_the_command_line(tmp_path):
    from livedenoise.cli import build_parser
    from livedenoise.commands._session import settings_from_args

    assert settings_from_args(build_parser().parse_args(["demo"])).live.second_pass is True
    path = tmp_path / "s.toml"
    path.write_text("[live]\nsecond_pass = false\n")
    assert settings_from_args(build_parser().parse_args(["demo", "--config", str(path)])).live.second_pass is False
    args = build_parser().parse_args(["live", "--simulate", "--no-second-pass"])
    assert settings_from_args(args).live.second_pass is False
    path.write_text("[live]\nsecond_pass = 'maybe'\n")
    with pytest.raises(ConfigError, match="second_pass"):
        settings_from_args(build_parser().parse_args(["demo", "--config", str(path)]))


def test_one_pass_is_auto_by_default_and_on_or_off_from_the_file_or_the_command_line(tmp_path, capsys):
    from livedenoise.cli import build_parser, main
    from livedenoise.commands._session import settings_from_args

    def one_pass(*argv: str):
        return settings_from_args(build_parser().parse_args(list(argv))).live.one_pass

    assert one_pass("demo") == "auto"
    path = tmp_path / "s.toml"
    path.write_text("[live]\none_pass = true\n")
    assert one_pass("demo", "--config", str(path)) is True
    assert one_pass("demo", "--config", str(path), "--one-pass", "auto") == "auto"  # the command line wins
    path.write_text("[live]\none_pass = false\n")
    assert one_pass("demo", "--config", str(path)) is False
    assert one_pass("live", "--simulate", "--one-pass") is True
    assert one_pass("live", "--simulate", "--one-pass", "on") is True
    assert one_pass("live", "--simulate", "--one-pass", "off") is False
    path.write_text("[live]\none_pass = 'sometimes'\n")
    with pytest.raises(ConfigError, match="one_pass"):
        settings_from_args(build_parser().parse_args(["demo", "--config", str(path)]))
    with pytest.raises(SystemExit):
        main(["live", "--simulate", "--one-pass", "sometimes"])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_the_command_line_precision_overrides_the_session_file_and_bad_values_are_refused(tmp_path, capsys):
    from livedenoise.cli import build_parser, main
    from livedenoise.commands._session import settings_from_args

    path = tmp_path / "s.toml"
    path.write_text("[live]\nprecision = 'fp32'\n")
    args = build_parser().parse_args(["demo", "--config", str(path)])
    assert settings_from_args(args).live.precision == "fp32"
    args = build_parser().parse_args(["demo", "--config", str(path), "--precision", "bf16"])
    assert settings_from_args(args).live.precision == "bf16"
    with pytest.raises(SystemExit):
        main(["live", "--simulate", "--precision", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err
