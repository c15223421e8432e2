"""Shared set-up of live sessions for `livedenoise demo` and `livedenoise live`."""
from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from livedenoise.commands.settings import Settings, load_settings
from livedenoise.config import PRECISIONS, describe_validation_error
from livedenoise.errors import ConfigError, LivedenoiseError


def add_session_arguments(p: argparse.ArgumentParser) -> None:
    """Options common to every live session."""
    p.add_argument("--config", type=Path,
                   help="session TOML with [microscope], [training], [live] tables (default config/session.toml)")
    p.add_argument("--mode", choices=["pairs", "self"],
                   help="adapt from calibration pairs or self-supervised on live frames")
    p.add_argument("--backbone",
                   help="'temporal' (fuses each frame with the 4 before it; default: [live] backbone), 'fast', "
                        "'lite' (less than half the time of 'fast' per frame, less quality), 'standard', "
                        "'temporal-standard' (about 3x the cost of 'temporal'), 'temporal-lite' (the lite network "
                        "fused: about half the cost of 'temporal', less quality; for 512x512 and larger "
                        "frames on a CPU) or a checkpoint path")
    p.add_argument("--finetune-seconds", type=float, help="time budget for background fine-tuning")
    p.add_argument("--positions", type=int, help="stage positions for calibration pairs")
    p.add_argument("--roi", help="simulated field of view WxH, e.g. 256x256")
    p.add_argument("--camera-calibration", type=Path, help="file from `livedenoise calibrate-camera` (optional)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="network arithmetic (default: [live] precision, auto: fp16 on CUDA, fp32 elsewhere); bf16 runs "
                        "the network 1.8-2x faster on CPUs with native bfloat16, at a small measured quality cost, and "
                        "makes the background fine-tune bf16 too unless [training] precision is set")
    p.add_argument("--compile", dest="compiled", action="store_const", const=True,
                   help="run the network through torch.compile (default: [live] compiled, off): compiled before "
                        "imaging starts, then faster frames on a CPU with Intel AMX in bf16 (measured in the README)")
    p.add_argument("--no-second-pass", dest="second_pass", action="store_const", const=False,
                   help="temporal backbone: fuse the frames' 2-D results only, without denoising their "
                        "motion-compensated average (one 2-D pass per frame instead of two; default: [live] "
                        "second_pass)")
    p.add_argument("--one-pass", dest="one_pass", nargs="?", const="on", choices=["auto", "on", "off"],
                   help="temporal backbone: how the display denoises each frame: auto (two 2-D passes while it keeps "
                        "up with the camera, one pass while it falls behind), on (also --one-pass with no value: "
                        "always one pass, the frame's motion-compensated average with the frames before it; about 1.2x "
                        "a 2-D frame's cost instead of 2.2x) or off (always two passes) (default: [live] one_pass, "
                        "auto; in the file: \"auto\", true or false)")
    p.add_argument("--denoised-format", choices=["ndtiff", "ome-zarr"],
                   help="recorded denoised frames (default: [live] denoised_format, ndtiff); ome-zarr is recorded as "
                        "NDTiff while acquiring and copied into denoised.ome.zarr at the end")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for raw, denoised and the model (default: runs/demo or runs/live; where that holds "
                        "an earlier session, the first of runs/demo-2, runs/demo-3, ... that is new or empty)")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty output folder")


#: ``--one-pass`` on/off/auto -> ``[live] one_pass`` (absent: None, the config file's value)
_ONE_PASS: dict[str | None, bool | str] = {"on": True, "off": False, "auto": "auto"}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the config file with command-line overrides applied (validated)."""
    s = load_settings(args.config)
    live = {k: v for k, v in {"mode": args.mode, "backbone": args.backbone,
                              "finetune_time_budget_s": args.finetune_seconds,
                              "calibration_positions": args.positions,
                              "precision": getattr(args, "precision", None),
                              "second_pass": getattr(args, "second_pass", None),
                              "one_pass": _ONE_PASS.get(getattr(args, "one_pass", None)),
                              "compiled": getattr(args, "compiled", None),
                              "denoised_format": getattr(args, "denoised_format", None)}.items() if v is not None}
    micro = {}
    if args.roi:
        try:
            w, h = (int(v) for v in args.roi.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--roi {args.roi!r}: expected WIDTHxHEIGHT, e.g. 256x256") from None
        if min(w, h) < MIN_ROI_SIDE:  # refused before anything is acquired or written
            raise ConfigError(f"--roi {args.roi}: each side must be at least {MIN_ROI_SIDE} pixels (the session fits "
                              "its noise model and fine-tunes on patches of the frame), e.g. 256x256")
        micro = {"roi_width": w, "roi_height": h}
    try:
        from pydantic import ValidationError

        return s.model_copy(update={"live": s.live.model_validate({**s.live.model_dump(), **live}),
                                    "microscope": s.microscope.model_validate({**s.microscope.model_dump(), **micro})})
    except ValidationError as exc:
        text = describe_validation_error(exc, "command line")
        for key, flag in _FLAGS.items():  # the option the user typed, not the config key behind it
            text = text.replace(f"key '{key}'", flag)
        raise ConfigError(text) from None


#: The smallest simulated field of view a session accepts (pixels per side).
MIN_ROI_SIDE = 32
#: Config keys set from the command line -> the option that sets them (for validation messages).
_FLAGS = {"roi_width": "--roi (width)", "roi_height": "--roi (height)", "finetune_time_budget_s": "--finetune-seconds",
          "calibration_positions": "--positions", "mode": "--mode", "backbone": "--backbone",
          "precision": "--precision"}


#: Written into every session output folder: ``--overwrite`` only ever clears a folder that has it.
SESSION_MARKER = ".livedenoise-session"
#: What a session writes (NDTiff folders get ``_1``, ``_2`` from the writer); ``--overwrite`` removes only these.
_SESSION_ENTRY = re.compile(r"^(raw|denoised|calibration)(_\d+)?(\.[\w.]+)?$"
                            r"|^adapted-model\.safetensors$|^report\.json$")


def session_output(given: Path | None, default: Path, overwrite: bool) -> Path:
    """The folder a session writes to: ``given`` (``-o``) as it is; without one ``default``, or where that already
    holds files (an earlier run) the first of ``default-2``, ``default-3``, ... that is new or empty (``--overwrite``:
    ``default`` itself, replaced as :func:`prepare_output` replaces).

    Why: the quick start's ``demo`` is the first command a user runs, and a second run of it used to stop at "output
    folder is not empty"; a new folder keeps the earlier run's data and needs nothing of the user."""
    if given is not None or overwrite:
        return given if given is not None else default
    n = 1
    path = default
    while _holds_files(path):
        n += 1
        path = default.with_name(f"{default.name}-{n}")
    return path


def _holds_files(path: Path) -> bool:
    """Whether ``path`` exists and holds anything but a session's marker (a file counts as full)."""
    try:
        return path.exists() and (not path.is_dir() or any(e.name != SESSION_MARKER for e in path.iterdir()))
    except OSError:  # unreadable: prepare_output says so
        return False


def prepare_output(path: Path, overwrite: bool) -> Path:
    """Create the output folder; refuse a non-empty one unless ``overwrite`` (raw data is never replaced).

    Why so careful: ``--overwrite`` used to remove the whole folder, so ``-o .`` or a folder holding the
    user's own files lost them. Now it clears only a folder a session wrote (it holds
    :data:`SESSION_MARKER`), and in it only the entries a session writes (``raw*``, ``denoised*``,
    ``calibration*``, ``adapted-model.safetensors``, ``report.json``); anything else stays.
    """
    if path.exists() and not path.is_dir():
        raise LivedenoiseError(f"{path}: exists and is not a folder; choose a folder for the session's output with -o")
    try:
        if _holds_files(path):  # the marker alone (a session that wrote nothing) is an empty folder
            if not overwrite:
                raise LivedenoiseError(f"{path}: output folder is not empty; "
                                       "choose another with -o or pass --overwrite")
            if not (path / SESSION_MARKER).is_file():
                raise LivedenoiseError(
                    f"{path}: --overwrite only replaces the output of an earlier livedenoise session (a folder with a "
                    f"{SESSION_MARKER} file), and this folder is not one, so nothing was deleted; choose a new or "
                    "empty folder with -o")
            for entry in sorted(path.iterdir()):
                if _SESSION_ENTRY.match(entry.name):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
        path.mkdir(parents=True, exist_ok=True)
        (path / SESSION_MARKER).write_text(
            "This folder holds a livedenoise session's output. `--overwrite` removes only raw*, denoised*, "
            "calibration*, adapted-model.safetensors and report.json here.\n")
    except OSError as exc:
        raise LivedenoiseError(f"{path}: cannot prepare the output folder ({exc.strerror or exc}); choose a writable "
                               "folder with -o") from None
    return path


#: Exit statuses of a session ended by a signal (the shell's convention: 128 + signal number).
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[dict]:
    """While the block runs, Ctrl-C or SIGTERM calls ``stop`` (a session's ``interrupt``) instead of raising.

    Why: a ``KeyboardInterrupt`` raised wherever the main thread happens to be tore down the simulated
    core under a running acquisition (tracebacks, an abort, a raw NDTiff whose index was never written).
    Stopping through the session ends the camera first, then closes the datasets. A second Ctrl-C
    raises ``KeyboardInterrupt`` as usual, for a session that does not stop. Yields a dict whose
    ``"signal"`` is the signal received (or None); see :data:`SIGNAL_EXIT` for the exit status.
    """
    got: dict = {"signal": None}
    if threading.current_thread() is not threading.main_thread():  # signals can only be handled there
        yield got
        return

    def handler(signum, frame) -> None:
        if got["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        got["signal"] = signum
        print("\nstopping: finishing the acquisition and closing the raw data (Ctrl-C again to abort)...",
              flush=True)
        stop()

    previous = {s: signal.signal(s, handler) for s in SIGNAL_EXIT}
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
