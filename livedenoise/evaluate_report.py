"""Moved to :mod:`livedenoise.evaluate.report`; this path warns and goes away next release."""
from livedenoise._moved import moved_module

__getattr__ = moved_module(__name__, "livedenoise.evaluate.report")

__all__ = [  # the old module's public names, so `from old import *` still works (each one warns)
    "BASELINES",
    "FLAT_NOTE",
    "KEPT_INITIAL",
    "METRIC_LABELS",
    "NOT_TRAINED",
    "NOT_TRAINED_NOTE",
    "PLOT_METRICS",
    "PRODUCT",
    "aggregate",
    "fmt",
    "json_safe",
    "losses",
    "markdown_table",
    "method_label",
    "metric_table",
    "plot_bars",
    "plot_lines",
    "pretrained_vs_scratch",
    "section",
    "steps_text",
    "stop_text",
    "write_report",
]
