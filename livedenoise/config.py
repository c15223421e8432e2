"""All configurable settings of livedenoise, as pydantic models loaded from TOML in ``config/``.

One place for defaults. The simulated microscope's models come from :mod:`simulators.config`
(the simulator must not import livedenoise); training and live-session settings are added here.
Every model forbids unknown keys: a typo in a file fails with the file, the key and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from livedenoise.errors import ConfigError
from simulators.config import (
    MicroscopeConfig,
    SimulatorConfigError,
    config_dir,
    load_microscope_config,
    microscope_from_dict,
    read_toml,
    validate_model,
)


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
        description=("few-pair fine-tuning of the synthetic-trained backbone; on real dev pairs (bench_pairs --quick, 5 pairs, "
                     "60 s) 1e-3 lost 0.16 dB to the backbone, 1e-4 gained 0.07, 3e-5 0.06"),
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
    time_budget_s: float = Field(60.0, gt=0, description="fine-tune for at most this many seconds")
    max_steps: int = Field(2000, ge=1)
    seed: int = 0


class LiveConfig(_Strict):
    """A live session: how to calibrate, which backbone to start from, how long to fine-tune."""

    mode: Literal["pairs", "self"] = "pairs"
    backbone: str = Field("fast", description="shipped backbone name ('fast', 'standard' or 'temporal') or a checkpoint path")
    calibration_positions: int = Field(5, ge=1, le=100, description="stage positions for calibration pairs")
    reference: Literal["exposure", "power", "average"] = Field(
        "average",
        description=(
            "how the high-SNR reference is made: the average of N frames at the live settings (default: its expected "
            "value equals the live frame's, camera fixed pattern included), a longer exposure, or more light (both "
            "affine-matched to the live frame's intensity)"
        ),
    )
    reference_exposure_ms: float = Field(200.0, gt=0, le=60000)
    reference_power: float = Field(100.0, gt=0, le=100)
    reference_average: int = Field(16, ge=2, le=1024)
    self_supervised_frames: int = Field(8, ge=1, le=1000)
    finetune_time_budget_s: float = Field(45.0, gt=0)
    frames: int = Field(120, ge=1, description="live frames to acquire in `livedenoise demo`")
    interval_ms: float = Field(100.0, ge=0, description="minimum time between live frames (0 = as fast as the camera)")
    position_spacing_um: float = Field(60.0, gt=0, description="distance between calibration positions")
    save_denoised: bool = True


class Settings(_Strict):
    """Everything a session needs: microscope (simulated), training and live settings."""

    microscope: MicroscopeConfig = Field(default_factory=MicroscopeConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings from a TOML file with ``[microscope]``, ``[training]`` and ``[live]`` tables.

    Without a path, ``config/session.toml`` is used if present, else the defaults, and the microscope
    comes from ``config/microscope.toml``. Errors name the file, the key and what is allowed.
    """
    source = Path(path) if path is not None else config_dir() / "session.toml"
    try:
        data: dict[str, Any] = read_toml(source) if (path is not None or source.is_file()) else {}
        micro = data.pop("microscope", None)
        settings: Settings = validate_model(Settings, data, str(source))
        microscope = load_microscope_config() if micro is None else microscope_from_dict(micro, f"{source} [microscope]")
    except SimulatorConfigError as exc:
        raise ConfigError(str(exc)) from None
    return settings.model_copy(update={"microscope": microscope})
