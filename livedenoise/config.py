"""Settings of livedenoise's own work -- training and live sessions -- as strict pydantic models, read from TOML.

The simulated microscope's settings are the simulator's (:mod:`simulators.config`); the commands that run
it combine both (:mod:`livedenoise.commands.settings`). Nothing here imports the simulator, so a session
on real hardware reads only what it uses. Every model forbids unknown keys: a typo in a file fails with
the file, the key and what is allowed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from livedenoise.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


#: Arithmetic of training steps (fp32, or bf16 autocast with fp32 weights; livedenoise.training.loop).
TrainPrecision = Literal["fp32", "bf16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TrainingConfig(_Strict):
    """Fine-tuning / pretraining settings. Learning rates follow the papers (Wang et al.; CNNT)."""

    patch_size: int = Field(64, ge=16, le=1024, description="square training patch size in pixels")
    batch_size: int = Field(8, ge=1, le=512)
    lr_pretrain: float = Field(1e-3, gt=0, le=1)
    lr_self_supervised: float = Field(1e-4, gt=0, le=1)
    lr_pairs: float = Field(
        1e-4, gt=0, le=1,
        description=("few-pair fine-tuning of the synthetic-trained backbone; on real dev pairs (bench_pairs --quick, "
                     "5 pairs, 60 s) 1e-3 lost 0.16 dB to the backbone, 1e-4 gained 0.07, 3e-5 0.06"),
    )
    loss: Literal["l2", "l1"] = "l2"
    ssim_weight: float = Field(0.0, ge=0, le=10, description="weight of a (1-SSIM) term for pair training")
    patience: int = Field(8, ge=1, description="early stopping: validations without improvement")
    steps_per_validation: int = Field(10, ge=1)
    validation_fraction: float = Field(0.2, gt=0, lt=0.9)
    mask_grid: int = Field(4, ge=2, le=16, description="blind-spot grid spacing: 1/grid^2 of pixels masked per step")
    self_supervised: Literal["noise2same", "noise2self", "sure"] = Field(
        "noise2same", description="self-supervised objective (Noise2Same needs the VST normaliser's known noise level)"
    )
    adapt_layers: Literal["all", "decoder", "last", "bias"] = Field(
        "all",
        description=("which weights a fine-tune changes: all, the decoder half (up-sampling, decoder blocks, head), "
                     "the last decoder level and head, or every bias; the rest stay the backbone's (bench_pairs, 27 "
                     "held-out dev fields: decoder = all within 0.05 dB, so all stays the default)"),
    )
    precision: TrainPrecision = Field(
        "fp32",
        description=("arithmetic of the training steps: fp32, or bf16 (autocast; weights, losses and validations stay "
                     "fp32; 1.3-1.45x the steps per second measured on a CPU with native bfloat16). A live session "
                     "whose [live] precision is bf16 fine-tunes in bf16 on a CPU or CUDA unless this is set"))
    time_budget_s: float = Field(60.0, gt=0, description="fine-tune for at most this many seconds")
    max_steps: int = Field(2000, ge=1)
    seed: int = 0


#: The network's arithmetic: auto (fp16 on CUDA, fp32 elsewhere), fp32, bf16, fp16 (see ``inference.Denoiser``).
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


class LiveConfig(_Strict):
    """A live session: how to calibrate, which backbone to start from, how long to fine-tune."""

    mode: Literal["pairs", "self"] = "pairs"
    backbone: str = Field("temporal",
                          description=("shipped backbone name ('temporal': the fast 2-D network fused with the 4 "
                                       "frames before, the default; 'temporal-lite': the lite network fused, about "
                                       "half the cost; 'fast', 'standard', 'lite', 'temporal-standard') or a "
                                       "checkpoint path"))
    calibration_positions: int = Field(5, ge=1, le=100, description="stage positions for calibration pairs")
    reference: Literal["exposure", "power", "average"] = Field(
        "average",
        description=(
            "how the high-SNR reference is made: the average of N frames at the live settings (default: its expected "
            "value equals the live frame's, camera fixed pattern included), a longer exposure, or more light (both "
            "affine-matched to the live frame's intensity)"
        ),
    )
    remove_fixed_pattern: bool = Field(
        True,
        description=("remove the camera's fixed pattern from the references before fine-tuning: the per-pixel median "
                     "of their fine detail over the calibration fields (3 or more; the fields must not overlap). An "
                     "averaged reference keeps the pattern, and a fine-tune on it learns to reproduce what the "
                     "backbone removes (bench_temporal_pairs: -2.61 dB at 5 photons without, +0.60 with)"))
    reference_exposure_ms: float = Field(200.0, gt=0, le=60000)
    reference_power: float = Field(100.0, gt=0, le=100)
    reference_average: int = Field(16, ge=2, le=1024)
    self_supervised_frames: int = Field(8, ge=1, le=1000)
    finetune_time_budget_s: float = Field(45.0, gt=0)
    finetune_yield_share: float = Field(
        0.5, ge=0, lt=1,
        description=("largest share of the background fine-tune's time it may spend waiting, between its steps, for "
                     "the display to finish denoising a frame (the display comes first); the waits count against "
                     "finetune_time_budget_s; 0: the fine-tune never waits"))
    frames: int = Field(120, ge=1, description="live frames to acquire in `livedenoise demo`")
    interval_ms: float = Field(100.0, ge=0, description="minimum time between live frames (0 = as fast as the camera)")
    position_spacing_um: float | None = Field(
        None, gt=0, description=("distance between calibration positions in µm (default: the field of view's larger "
                                 "side plus 10 %, from the pixel size; 60 µm when the microscope has none)"))
    save_denoised: bool = True
    denoised_format: Literal["ndtiff", "ome-zarr"] = Field(
        "ndtiff", description=("format of the recorded denoised frames: ndtiff, or ome-zarr (recorded as NDTiff while "
                               "acquiring, copied into <name>.ome.zarr when the session ends)"))
    precision: Precision = Field(
        "auto",
        description=("network arithmetic: auto (fp16 on CUDA, fp32 elsewhere), fp32, bf16 (on a CPU with native "
                     "bfloat16 the network runs 1.8-2x faster, at a small measured quality cost; see the README) or "
                     "fp16"))
    second_pass: bool = Field(
        True,
        description=("with the temporal backbone, also denoise each frame's motion-compensated average with the frames "
                     "before it (a static scene averaged over n frames has n times the light): better quality at a "
                     "second 2-D pass per frame; false keeps the fusion of the frames' 2-D results alone"))
    one_pass: bool | Literal["auto"] = Field(
        "auto",
        description=("with the temporal backbone, how the display denoises each frame: auto (two passes while the "
                     "display keeps up with the camera, one pass while it falls behind: chosen from what it measures), "
                     "true (always one pass: the frame's motion-compensated average with the frames it showed before "
                     "it, denoised once; about 1.2x a 2-D frame's cost instead of 2.2x with second_pass; 0.3 dB lower "
                     "on simulated time-lapses and 0.8 dB as displayed in the quick start's 256x256 session, as good "
                     "on real structure; its averages keep the backbone's 2-D stage, so a fine-tune changes the "
                     "recorded frames more than the display) or false (always two passes, skipping the second on a "
                     "frame after skipped ones); with true, a causal recorded_window records in one pass too"))
    recorded_window: Literal["centred", "causal"] = Field(
        "centred",
        description=("with a temporal backbone, the frames each recorded denoised frame is fused with: centred (the "
                     "frames before and after it, as batch denoising does; the recorder lags the camera by the window "
                     "and runs its own second pass) or causal (the frames before it, as the display shows it, sharing "
                     "the display's second passes)"))
    compiled: bool = Field(
        False,
        description=("run the network through torch.compile: seconds of compilation before live imaging starts (and "
                     "in the fine-tune's thread before a swap), then faster frames where much of the time is not "
                     "convolutions (bf16 on a CPU with Intel AMX); the same outputs in fp32, within 1e-2 of the "
                     "range in bf16; needs a C++ compiler, else it runs uncompiled with a warning"))
    exposure_ms: float | None = Field(
        None, gt=0, le=60000,
        description="live exposure; unset: the exposure Micro-Manager is set to "
                    "(the simulated microscope's own setting)")
    light_power: float | None = Field(
        None, ge=0, le=100, description="live light power in percent; unset: the light source is left as it is")


class SessionSettings(_Strict):
    """What a live session needs: training and live settings (the ``[training]`` and ``[live]`` tables)."""

    training: TrainingConfig = Field(default_factory=TrainingConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)

    def finetune_training(self, device_type: str = "cpu") -> TrainingConfig:
        """``[training]`` as the session's fine-tune on ``device_type`` uses it: in bf16 when the live denoiser runs
        in bf16, ``[training] precision`` is not set (one switch for the session's arithmetic; set it to fp32 to keep
        the fine-tune in fp32) and the device trains in bf16 (a CPU or CUDA; elsewhere fp32, as before)."""
        if (self.live.precision == "bf16" and "precision" not in self.training.model_fields_set
                and device_type in ("cpu", "cuda")):
            return self.training.model_copy(update={"precision": "bf16"})
        return self.training


def cache_dir() -> Path:
    """The user's cache folder (rendered training banks, models taken out of bioimage.io packages): never inside
    the data or the checkout. ``$XDG_CACHE_HOME/livedenoise``, else ``~/.cache/livedenoise``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "livedenoise"


def settings_dir() -> Path:
    """Where ``session.toml`` is looked for: ``$LIVEDENOISE_CONFIG_DIR``; else this checkout's ``config/``; else the
    copy an installed wheel holds beside the package (``simulators/presets``, found as a folder, not imported)."""
    env = os.environ.get("LIVEDENOISE_CONFIG_DIR")
    if env:
        if not Path(env).is_dir():  # said here: otherwise the first missing preset would be blamed on its key
            raise ConfigError(f"LIVEDENOISE_CONFIG_DIR={env}: no such folder; expected a folder with session.toml, "
                              "microscope.toml and cameras/ (unset it to use livedenoise's own)")
        return Path(env)
    root = Path(__file__).resolve().parent.parent
    checkout = root / "config"
    return checkout if (checkout / "session.toml").is_file() else root / "simulators" / "presets"


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; I/O and syntax errors become one sentence naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML (the file is not UTF-8 text)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One readable sentence for a pydantic error: the source, each dotted key, and what is allowed."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            given = err.get("input")
            given_txt = f" (got {given!r})" if not isinstance(given, (dict, list)) else ""
            parts.append(f"key '{key}': {err['msg']}{given_txt}")
    return f"{source}: " + "; ".join(parts)


def load_session_settings(path: str | Path | None = None) -> SessionSettings:
    """The ``[training]`` and ``[live]`` tables of a TOML file (default ``session.toml`` in :func:`settings_dir`,
    else the defaults). A ``[microscope]`` table (the simulated microscope's, see
    :func:`livedenoise.commands.settings.load_settings`) is ignored here. Errors name the file, the key and what
    is allowed."""
    source = Path(path) if path is not None else settings_dir() / "session.toml"
    data = read_toml(source) if (path is not None or source.is_file()) else {}
    data.pop("microscope", None)
    try:
        return SessionSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(source))) from None
