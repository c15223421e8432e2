"""The ``livedenoise`` command line.

Each sub-command lives in its own module under :mod:`livedenoise.commands` and registers
itself, so this file only wires them together and turns user errors into one clear line.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from livedenoise import __version__
from livedenoise.errors import LivedenoiseError

#: Sub-commands in the order ``livedenoise --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "live",
    "simulate",
    "calibrate-camera",
    "pretrain",
    "finetune",
    "denoise",
    "export",
    "evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="livedenoise",
        description=(
            "Real-time denoising for fluorescence microscopy with Micro-Manager / pycromanager. "
            "Start with `livedenoise demo` to run a complete simulated session."
        ),
    )
    parser.add_argument("--version", action="version", version=f"livedenoise {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = "livedenoise.commands." + name.replace("-", "_")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command still being written: keep the others usable
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``livedenoise`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,  # pymmcore-plus sets the root logger to DEBUG on import
    )
    for noisy in ("pymmcore-plus", "mmpycorex", "pycromanager", "distributed", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = _terminate_like_ctrl_c()
    try:
        return int(args.func(args) or 0)
    except LivedenoiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # what stays depends on the command (its parser's ``interrupted`` default)
        print(getattr(args, "interrupted", None) or "interrupted: nothing was written under the output's name (it is "
              "written only when complete)", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every command stops through the same clean path (exit 143)."""


def _terminate_like_ctrl_c():
    """Make SIGTERM raise :class:`Terminated` in the main thread (sessions install their own handler on top)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
