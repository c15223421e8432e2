"""`livedenoise live --auto` and `livedenoise demo` as a user runs them: exit code 0, files, screenshot content."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from livedenoise.checkpoint import save_checkpoint
from livedenoise.models import build_model
from livedenoise.normalization import Normalizer
from livedenoise.training.simdata import BACKBONE_SCALE

SESSION = """
[microscope]
camera = "andor-zyla-4.2"
roi_width = 64
roi_height = 64
exposure_ms = 10.0
light_power = 10.0
[microscope.sample]
slide_width = 256
slide_height = 256
peak_rate = 10000.0
motion = 0.0
[training]
patch_size = 32
batch_size = 4
max_steps = 10
steps_per_validation = 5
[live]
calibration_positions = 2
reference_average = 4
finetune_time_budget_s = 30.0
frames = 8
interval_ms = 20.0
position_spacing_um = 10.0
"""


@pytest.fixture(scope="module")
def session_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("session")
    (d / "session.toml").write_text(SESSION)
    torch.manual_seed(0)
    model = build_model("unet", widths=[8, 16])
    save_checkpoint(d / "tiny.safetensors", model, arch="unet", arch_kwargs={"widths": [8, 16]},
                    normalizer=Normalizer(vst=True, scale=BACKBONE_SCALE), name="tiny")
    return d


def run_cli(args, cwd):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-m", "livedenoise.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=400)


def test_live_auto_shuts_down_cleanly_and_screenshot_shows_both_images(session_files, tmp_path):
    shot = tmp_path / "viewer.png"
    res = run_cli(["live", "--simulate", "--auto", "--config", str(session_files / "session.toml"),
                   "--backbone", str(session_files / "tiny.safetensors"), "--device", "cpu",
                   "-o", str(tmp_path / "out"), "--screenshot", str(shot)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]  # also: no abort at exit, no hanging threads (timeout)
    assert "adapted model" in res.stdout and "Traceback" not in res.stderr
    assert (tmp_path / "out" / "adapted-model.safetensors").is_file()
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    h, w = img.shape
    assert w > 400 and h > 200
    band = img[int(h * 0.15):int(h * 0.6)]  # the two image panels
    left, right = band[:, int(w * 0.15):int(w * 0.45)], band[:, int(w * 0.55):int(w * 0.85)]
    assert left.std() > 10 and right.std() > 10, "both panels must show an image, not a blank area"


def test_demo_prints_and_saves_a_report(session_files, tmp_path):
    res = run_cli(["demo", "--config", str(session_files / "session.toml"), "--backbone",
                   str(session_files / "tiny.safetensors"), "--device", "cpu", "--precision", "bf16",
                   "-o", str(tmp_path / "demo")], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["precision"] == "bf16"  # --precision reached the live denoiser
    # what ran, for tables made from the report: the command, the backbone, the frame and the camera's pace
    assert report["command"].startswith("livedenoise demo --config ") and "--precision bf16" in report["command"]
    session = report["session"]
    assert session["backbone"] == "tiny" and session["interval_ms"] > 0
    assert re.fullmatch(r"\d+x\d+", session["roi"]) and session["frames_after_swap"] >= 1
    assert res.stdout.startswith("livedenoise demo: simulated ") and f"; output {tmp_path / 'demo'}" in res.stdout
    whole = [line for line in res.stdout.splitlines() if line.startswith("fine-tuning: ")]
    assert len(whole) == 1 and "validation loss on the pairs' held-out strips" in whole[0]  # one line, not cut at 80
    out = " ".join(res.stdout.split())
    # The quality table: one finite PSNR/SSIM per row, the numbers of report.json.
    rows = {label: re.search(r"[│|] " + re.escape(label) + r" [│|] (\S+) [│|] (\S+) [│|]", out)
            for label in ("raw (as acquired)", "pretrained backbone", "adapted model")}
    for label, key in (("raw (as acquired)", "raw"), ("pretrained backbone", "backbone")):
        psnr, ssim = float(rows[label].group(1)), float(rows[label].group(2))
        assert 5 < psnr < 60 and 0 < ssim <= 1, (label, psnr, ssim)
        assert psnr == round(report["quality"][key]["psnr"], 2)
    ft = re.search(r"fine-tuning: (\d+) steps in [\d.]+ s(?:, [\d.]+ s of it waiting for the display"
                   r"(?: until it stopped waiting \([^)]*\))?)? "
                   r"\(stopped: (\w+), weights of step (\d+) kept\), "
                   r"validation loss on the pairs' held-out strips (\S+) -> (\S+); swap decided on the calibration "
                   r"field kept out of it, scored as displayed: (.*?) "
                   r"(?:as displayed \(PSNR of every 5th frame shown\): (.*?) )?"
                   r"(?:as recorded \(PSNR of every 5th denoised frame saved\): (.*?) )?frames:", out)
    assert ft, out
    shown = report["display_quality"]
    if shown.get("backbone") is not None:  # what the viewer showed, as report.json has it
        assert ft.group(7).startswith(f"backbone {shown['backbone']:.2f} dB ({shown['backbone_frames']} frames)")
    kept = report["recorded_quality"]  # what was saved (a 2-D backbone: no temporal window to name)
    assert report["recorded_window"] == "" and kept["backbone_frames"] > 0
    assert ft.group(8).startswith(f"backbone {kept['backbone']:.2f} dB ({kept['backbone_frames']} frames)"), out
    phases = report["display_phases"]
    assert phases and sum(p["frames_denoised"] for p in phases.values()) == report["frames_denoised"]
    if len(phases) > 1:  # the display's pace while the fine-tune shares the CPU, and after
        assert "display by phase: " + next(iter(phases)) in out
    steps, best_step, initial, best = int(ft.group(1)), int(ft.group(3)), float(ft.group(4)), float(ft.group(5))
    assert steps == report["finetune"]["steps"] > 0 and best_step == report["finetune"]["best_step"]
    if report["swapped_at_frame"] is not None:  # adapted and swapped in: its row, its steps, its improvement
        assert report["finetune"]["adapted"] is True and 0 < best_step <= steps and best < initial
        assert ft.group(6) == f"swapped in at frame {report['swapped_at_frame']}"
        psnr = float(rows["adapted model"].group(1))
        assert np.isfinite(psnr) and psnr == round(report["quality"]["adapted"]["psnr"], 2)
        assert report["frames_written"] == report["frames_acquired"] > report["swapped_at_frame"]
    else:  # one clear line why the backbone stayed, and no adapted row
        assert ft.group(6).endswith("; the backbone was used throughout")
        assert ft.group(6).startswith(("not adapted: ", "adapted model not better on held-out frames"))
        assert rows["adapted model"] is None and "adapted" not in report["quality"]
    used = "adapted" if report["swapped_at_frame"] is not None else "backbone"
    top = re.search(r"achieved: (\S+) -> (\S+) dB PSNR against the simulator's ground truth \(([+-]\S+) dB;", out)
    assert top and float(top.group(1)) == round(report["quality"]["raw"]["psnr"], 2), out
    assert float(top.group(2)) == round(report["quality"][used]["psnr"], 2)
    assert report["calibration_pairs"] == 2
    assert Path(report["paths"]["raw"]).is_dir() and Path(report["paths"]["denoised"]).is_dir()
    # Refuses to overwrite a previous run without --overwrite (raw data is never replaced silently).
    again = run_cli(["demo", "--config", str(session_files / "session.toml"), "-o", str(tmp_path / "demo")], tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr


def test_live_mm_without_micro_manager_gives_one_clear_sentence(tmp_path):
    res = run_cli(["live", "--mm", "--backbone", "fast", "-o", str(tmp_path / "mm")], tmp_path)
    assert res.returncode == 2
    assert "No running Micro-Manager was found" in res.stderr and "--simulate" in res.stderr
    assert "Traceback" not in res.stderr


def test_live_mm_config_problems_each_give_one_clear_sentence(tmp_path):
    missing = run_cli(["live", "--mm-config", str(tmp_path / "scope.cfg"), "-o", str(tmp_path / "a")], tmp_path)
    assert missing.returncode == 2 and "scope.cfg: no such Micro-Manager configuration file" in missing.stderr
    cfg = tmp_path / "empty.cfg"
    cfg.write_text("# a configuration with no devices\n")
    adapters = tmp_path / "no-adapters"
    adapters.mkdir()
    no_camera = run_cli(["live", "--mm-config", str(cfg), "--mm-path", str(adapters), "-o", str(tmp_path / "b")],
                        tmp_path)
    assert no_camera.returncode == 2 and "empty.cfg: this configuration sets no camera" in no_camera.stderr
    wrong = run_cli(["live", "--mm-config", str(cfg), "--mm-path", str(tmp_path / "nowhere"), "-o",
                     str(tmp_path / "c")], tmp_path)
    assert wrong.returncode == 2 and "no Micro-Manager device adapters were found in" in wrong.stderr
    for res in (missing, no_camera, wrong):
        assert "Traceback" not in res.stderr and not (tmp_path / "a").exists()


def test_without_o_a_session_keeps_an_earlier_run_and_writes_to_the_next_free_folder(tmp_path):
    """The quick start's ``demo`` run a second time: its default folder holds the first run, which stays, and the new
    run goes to runs/demo-2 (then -3); an explicit ``-o`` is taken as given (and refused by prepare_output if full)."""
    from livedenoise.cli import build_parser
    from livedenoise.commands._session import prepare_output, session_output

    default = tmp_path / "runs" / "demo"
    assert session_output(None, default, overwrite=False) == default  # nothing there yet
    prepare_output(default, overwrite=False)  # an empty folder is reused: nothing to keep
    assert session_output(None, default, overwrite=False) == default
    (default / "raw_1").mkdir()
    assert session_output(None, default, overwrite=False) == tmp_path / "runs" / "demo-2"
    (tmp_path / "runs" / "demo-2").mkdir()  # empty: taken
    assert session_output(None, default, overwrite=False) == tmp_path / "runs" / "demo-2"
    (tmp_path / "runs" / "demo-2" / "report.json").write_text("{}")
    (tmp_path / "runs" / "demo-3").write_text("a file, not a folder")
    assert session_output(None, default, overwrite=False) == tmp_path / "runs" / "demo-4"
    assert session_output(None, default, overwrite=True) == default  # --overwrite: replace the default's session
    mine = tmp_path / "mine"
    assert session_output(mine, default, overwrite=False) == mine
    for command, name in ((["demo"], "demo"), (["live", "--simulate"], "live")):
        args = build_parser().parse_args(command)
        assert args.output is None and args.default_output == Path("runs") / name


def test_overwrite_clears_only_what_a_session_wrote_and_never_a_foreign_folder(tmp_path):
    from livedenoise.commands._session import SESSION_MARKER, prepare_output
    from livedenoise.errors import LivedenoiseError

    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    (user / "raw_1").mkdir()  # the user's own data, under a name a session could write
    with pytest.raises(LivedenoiseError, match="nothing was deleted"):
        prepare_output(user, overwrite=True)
    assert (user / "keep.txt").read_text() == "x" and (user / "raw_1").is_dir()

    out = prepare_output(tmp_path / "session", overwrite=False)
    assert (out / SESSION_MARKER).is_file()
    for d in ("raw_1", "denoised_1", "calibration_1"):
        (out / d).mkdir()
        (out / d / "NDTiff.index").write_bytes(b"1")
    (out / "adapted-model.safetensors").write_bytes(b"w")
    (out / "report.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LivedenoiseError, match="not empty"):
        prepare_output(out, overwrite=False)
    prepare_output(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [SESSION_MARKER, "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"

    (tmp_path / "file").write_text("x")
    with pytest.raises(LivedenoiseError, match="not a folder"):
        prepare_output(tmp_path / "file", overwrite=True)
    with pytest.raises(LivedenoiseError, match="cannot prepare the output folder"):
        prepare_output(tmp_path / "file" / "sub", overwrite=False)


@pytest.mark.parametrize("command, sig, code", [("demo", signal.SIGINT, 130), ("demo", signal.SIGTERM, 143),
                                                ("live", signal.SIGINT, 130)])
def test_a_signal_stops_a_session_cleanly_with_raw_frames_closed_and_readable(session_files, tmp_path, command, sig,
                                                                              code):
    """Ctrl-C / SIGTERM mid-acquisition: camera stopped first, raw NDTiff finished, exit 128+N, no traceback."""
    import time

    from livedenoise.io import open_dataset

    out = tmp_path / "session"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONUNBUFFERED": "1"}
    extra = ["--simulate", "--auto"] if command == "live" else []
    proc = subprocess.Popen([sys.executable, "-m", "livedenoise.cli", command, *extra, "--config",
                             str(session_files / "session.toml"), "--backbone", str(session_files / "tiny.safetensors"),
                             "--device", "cpu", "--mode", "self", "--frames", "100000", "-o", str(out)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("raw*/NDTiff.index")):  # frames are being acquired
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(3.0)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (stdout[-2000:], stderr[-3000:])
    assert "Traceback" not in stderr and "terminate called" not in stderr, stderr[-3000:]
    assert "interrupted: " in stdout
    raw_dir = next(out.glob("raw*"))
    raw = open_dataset(raw_dir)
    try:
        n = int(np.prod(raw.shape[:-2]))
        assert n > 0 and np.asarray(raw.reader[(0,) * (len(raw.shape) - 2)]).std() > 0  # real pixels, readable
    finally:
        raw.close()
    if command == "demo":
        report = json.loads((out / "report.json").read_text())
        assert report["interrupted"] is True and report["frames_acquired"] == n
        assert f"interrupted: {report['frames_acquired']} raw frames saved and closed" in stdout


def test_raw_frames_survive_a_sigkill_mid_acquisition(session_files, tmp_path):
    """kill -9 (no handler can run): every frame indexed before the kill is still readable from the raw NDTiff."""
    import time

    from livedenoise.io import open_dataset

    out = tmp_path / "session"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-m", "livedenoise.cli", "demo",
                             "--config", str(session_files / "session.toml"),
                             "--backbone", str(session_files / "tiny.safetensors"), "--device", "cpu", "--mode", "self",
                             "--frames", "100000", "-o", str(out)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        # frames indexed, not only the index created: on a loaded machine the first frame can take seconds more
        while not any(p.stat().st_size > 0 for p in out.glob("raw*/NDTiff.index")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(3.0)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    raw = open_dataset(next(out.glob("raw*")))
    try:
        n = int(np.prod(raw.shape[:-2]))
        assert n >= 2, raw.shape  # 3 s of a 10 frames/s camera after the first frame (~30 on an idle machine)
        last = np.asarray(raw.reader[tuple(s - 1 for s in raw.shape[:-2])])
        assert last.std() > 0  # the last indexed frame holds real pixels
    finally:
        raw.close()


def test_the_demo_says_how_long_the_fine_tune_waited_for_the_display_when_it_did():
    from livedenoise.commands.demo import outcome_lines

    ft = {"steps": 180, "elapsed_s": 29.5, "stopped": "early_stop", "best_step": 100, "initial_val_loss": 0.0006,
          "best_val_loss": 0.0005, "adapted": True}
    waited = outcome_lines({"finetune": {**ft, "paused_s": 14.4}, "swapped_at_frame": 12})[0]
    assert waited.startswith("fine-tuning: 180 steps in 29.5 s, 14.4 s of it waiting for the display (stopped: ")
    gave_up = outcome_lines({"finetune": {**ft, "paused_s": 5.0, "stopped_waiting": True,
                                          "display_skipped": [0.1, 0.352, 0.387]}, "swapped_at_frame": 12})[0]
    assert gave_up.startswith("fine-tuning: 180 steps in 29.5 s, 5.0 s of it waiting for the display until it stopped "
                              "waiting (the display skipped 35 % and 39 % of its frames in two windows in a row "
                              "although the fine-tune waited) (stopped: ")
    older = outcome_lines({"finetune": {**ft, "paused_s": 5.0, "stopped_waiting": True}, "swapped_at_frame": 12})[0]
    assert "until it stopped waiting (the display skipped more than 30 % of its frames twice in a row although " \
        "the fine-tune waited) (stopped: " in older  # a report.json written before the windows were recorded
    for paused in (0.01, 0.0, None):  # nothing worth saying, or a report from before the waits
        line = outcome_lines({"finetune": {**ft, "paused_s": paused}, "swapped_at_frame": 12})[0]
        assert line.startswith("fine-tuning: 180 steps in 29.5 s (stopped: early_stop, weights of step 100 kept)")


def test_an_interrupted_command_says_what_stays_of_its_work(monkeypatch, capsys):
    """Ctrl-C: denoise keeps its finished blocks (--resume), pretrain its interim checkpoint (--init); the others
    write nothing under the output's name, and none of them offers a --resume it does not have."""
    from livedenoise import cli
    from livedenoise.commands import denoise, export, pretrain

    def interrupted(args):
        raise KeyboardInterrupt

    for module in (denoise, export, pretrain):
        monkeypatch.setattr(module, "run", interrupted)
    said = {}
    for argv in (["denoise", "x.tif", "-o", "out"], ["export", "fast", "-o", "m.zip"],
                 ["pretrain", "-o", "m.safetensors"]):
        assert cli.main(argv) == 130
        said[argv[0]] = capsys.readouterr().err
    assert "the finished blocks are kept; run the same command with --resume" in said["denoise"]
    assert "interim checkpoint" in said["pretrain"] and "--init" in said["pretrain"]
    assert "nothing was written under the output's name" in said["export"] and "--resume" not in said["export"]
