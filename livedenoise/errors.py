"""User-facing error types.

Every problem a user can cause (bad file, bad value, missing weights, no Micro-Manager)
is raised as a :class:`LivedenoiseError` whose message is one self-contained sentence
naming the file or value and what was expected. The CLI prints that sentence and exits
with status 2 instead of showing a traceback.
"""
from __future__ import annotations


class LivedenoiseError(Exception):
    """An error caused by input or environment, explained in one sentence."""


class ConfigError(LivedenoiseError, ValueError):
    """Invalid configuration file or value (also a ``ValueError``, so ``except ValueError`` catches it)."""


class InputDataError(LivedenoiseError, ValueError):
    """Input image data that cannot be used (dtype, NaN, dimensions, corrupt file); also a ``ValueError``."""


class CheckpointError(LivedenoiseError, ValueError):
    """A model file that is missing, truncated, corrupt or does not match its metadata (also a ``ValueError``)."""


class MicroManagerUnavailable(LivedenoiseError, ConnectionError):
    """No Micro-Manager core could be reached (also a ``ConnectionError``, hence an ``OSError``)."""


class BatchIncomplete(LivedenoiseError, RuntimeError):
    """Some inputs of a multi-input batch could not be denoised; the others were written (also a ``RuntimeError``).

    ``summary`` is the :class:`~livedenoise.batch.BatchSummary` of what was done, with the failures
    in ``summary.failed``.
    """

    def __init__(self, message: str, summary: object) -> None:
        super().__init__(message)
        self.summary = summary
