"""What the user asked of a batch job, parsed and checked as a whole before anything is opened or written."""
from __future__ import annotations

import datetime as _dt
import numbers
import os
import re
import warnings
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from livedenoise.config import describe_validation_error
from livedenoise.errors import ConfigError, LivedenoiseError
from livedenoise.io import validate_axes

FORMATS = ("ome-tiff", "ndtiff", "ome-zarr")
DTYPES = ("float32", "input", "uint16", "uint8")
#: "fit": a noise model fitted to every input and channel (default); "stored": the model's own normaliser.
NOISE_MODELS = ("fit", "stored")
#: Other spellings of the output formats that the command line and the API accept.
FORMAT_ALIASES = {"ome": "ome-tiff", "ome-tif": "ome-tiff", "tiff": "ome-tiff", "zarr": "ome-zarr",
                  "omezarr": "ome-zarr", "ome.zarr": "ome-zarr"}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(value: str | int | float) -> int:
    """``"512MB"``, ``"1.5GiB"``, ``"800M"`` or a number of bytes -> bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"Memory budget {value!r} must be positive.")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"Memory budget {value!r} is not understood; expected e.g. '512MB', '2GB' or '1.5GiB'.")
    result = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if result <= 0:
        raise ConfigError(f"Memory budget {value!r} must be positive.")
    return result


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class BatchOptions(BaseModel):
    """Everything a batch job is asked to do besides its inputs and output folder, checked as a whole.

    The Python twin of ``livedenoise denoise``'s options (see :func:`livedenoise.batch.denoise_dataset` for what
    each one does). Field validators normalise single values (format aliases, memory text, axis letters,
    precision names); the model validator refuses combinations that contradict each other, so a job never
    starts on settings it cannot honour. :meth:`build` turns a validation failure into the one-sentence
    :class:`~livedenoise.errors.ConfigError` (or the :class:`~livedenoise.errors.InputDataError` for bad axes)
    that names the option.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model: Any = None
    adapt: Literal["self", "pairs"] | None = None
    pairs: str | None = None
    axes: str | None = None
    dtype: str = "float32"
    fmt: str = "ome-tiff"
    resume: bool = False
    overwrite: bool = False
    memory_budget: int = Field(default=parse_memory("1GB"), gt=0)
    scheduler: Any = None
    dry_run: bool = False
    progress: bool = True
    per_channel: bool = False
    adapt_time_s: float = Field(default=60.0, gt=0)
    adapt_frames: int = Field(default=8, ge=1)
    device: str = "auto"
    workers: int | None = Field(default=None, ge=1)
    seed: int = 0
    on_block_done: Callable[..., None] | None = None
    camera_calibration: str | None = None
    frames_averaged: int = 1
    strict: bool = False
    noise_model: str = "fit"
    ensemble: int = 1
    precision: str = "auto"
    second_pass: bool = True
    compiled: bool = False

    @field_validator("adapt", mode="before")
    @classmethod
    def _adapt_known(cls, value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return value  # ("pairs", DIR): split by the model validator below
        if value not in (None, "self", "pairs"):
            raise ValueError(f"--adapt {value!r} is unknown; expected 'self' or 'pairs DIR'.")
        return value

    @model_validator(mode="before")
    @classmethod
    def _split_adapt_pair(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("adapt"), (tuple, list)):
            adapt = list(data["adapt"])
            data = {**data, "adapt": adapt[0], "pairs": adapt[1] if len(adapt) > 1 else data.get("pairs")}
        return data

    @field_validator("pairs", "camera_calibration", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("fmt", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> str:
        text = str(value).lower()
        text = FORMAT_ALIASES.get(text, text)
        if text not in FORMATS:
            raise ValueError(f"Output format {text!r} is unknown; expected one of {', '.join(FORMATS)}.")
        return text

    @field_validator("dtype", mode="before")
    @classmethod
    def _known_dtype(cls, value: Any) -> str:
        if value not in DTYPES:
            raise ValueError(f"Output dtype {value!r} is unknown; expected one of {', '.join(DTYPES)}.")
        return str(value)

    @field_validator("noise_model", mode="before")
    @classmethod
    def _known_noise_model(cls, value: Any) -> str:
        if value not in NOISE_MODELS:
            raise ValueError(f"--noise-model {value!r} is unknown; expected one of {', '.join(NOISE_MODELS)}.")
        return str(value)

    @field_validator("device", mode="before")
    @classmethod
    def _device_text(cls, value: Any) -> Any:
        # a torch.device (what the Python API took before) -> "cuda:0"; select_device names a wrong one later
        return value if value is None or isinstance(value, str) else str(value)

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        return parse_memory(value)

    @field_validator("axes", mode="before")
    @classmethod
    def _axes(cls, value: Any) -> Any:
        return None if value is None else validate_axes(value)

    @field_validator("ensemble", mode="before")
    @classmethod
    def _known_ensemble(cls, value: Any) -> int:
        from livedenoise.inference import ENSEMBLES  # torch is loaded only once a job is built

        if value not in ENSEMBLES or isinstance(value, bool):
            raise ValueError(f"--ensemble {value!r} is invalid; expected one of {', '.join(map(str, ENSEMBLES))}.")
        return int(value)

    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, value: Any) -> str:
        from livedenoise.inference import canonical_precision

        if str(value).lower() == "auto":
            return "auto"
        canonical_precision(value)  # the one list of names (fp32, bf16, fp16 and their aliases)
        return str(value)

    @field_validator("frames_averaged", mode="before")
    @classmethod
    def _whole_count(cls, value: Any) -> int:
        whole = isinstance(value, (numbers.Integral, float)) and not isinstance(value, bool) and int(value) == value
        if not whole or value < 1:
            raise ValueError(f"--frames-averaged {value!r} is invalid; expected an integer >= 1.")
        return int(value)

    @model_validator(mode="after")
    def _consistent(self) -> BatchOptions:
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other; choose one.")
        if self.noise_model == "stored" and (self.camera_calibration is not None or self.frames_averaged != 1):
            raise ValueError("--noise-model stored uses the model's own normaliser; --camera-calibration and "
                             "--frames-averaged need --noise-model fit.")
        if self.adapt == "pairs" and not self.pairs:
            raise ValueError("--adapt pairs needs the folder of pairs: --adapt pairs DIR.")
        if self.per_channel and self.adapt is None and not isinstance(self.model, (list, tuple, dict)):
            raise ValueError(
                "--per-channel needs --adapt self (one model adapted per channel) or one model per channel.")
        return self

    @classmethod
    def build(cls, **options: Any) -> BatchOptions:
        """The options, or the first problem as one sentence naming the option (the error class of its check)."""
        if "calibration" in options:  # the name before 0.2: the camera's maps, not the live calibration pairs
            warnings.warn("denoise_dataset(calibration=...) is now camera_calibration=...", DeprecationWarning,
                          stacklevel=3)
            popped = options.pop("calibration")
            options = {**options, "camera_calibration": popped}  # wins over a base BatchOptions' value
        try:
            return cls(**options)
        except ValidationError as exc:
            err = exc.errors()[0]
            original = (err.get("ctx") or {}).get("error")
            if isinstance(original, LivedenoiseError):
                raise original from None
            if err["type"] == "value_error" and original is not None:
                raise ConfigError(str(original)) from None
            raise ConfigError(describe_validation_error(exc, "batch options").replace("key '", "option '")) from None
