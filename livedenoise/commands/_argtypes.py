"""argparse value types that check ranges, so a bad number gets one sentence (exit 2) before any work starts.

Why here and not in each command: ``--adapt-time 0`` used to save an unchanged model as "adapted",
``--adapt-frames 0`` silently became 1, ``pretrain --batch-size 0`` and ``calibrate-camera --frames
100000`` ended in tracebacks. argparse turns ``ArgumentTypeError`` into ``argument --x: <message>``.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    return positive_number("seconds")(text)


def positive_number(unit: str = "", upper: float | None = None) -> Callable[[str], float]:
    """A finite float > 0 (and <= ``upper`` when given); ``unit`` names what it counts in messages."""
    what = f"a number of {unit}" if unit else "a number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{text} must be {what} greater than 0")
        if upper is not None and value > upper:
            raise argparse.ArgumentTypeError(f"{text} must be at most {upper:g}")
        return value

    parse.__name__ = "positive number"
    return parse


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text} must be {bound}")
        return value

    parse.__name__ = "whole number"
    return parse
