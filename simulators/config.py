"""Pydantic configuration of the simulated microscope: camera, sample and microscope.

The models live here (not in :mod:`livedenoise`) because the simulator must stay usable on its
own; :mod:`livedenoise.config` re-uses them and adds training and live-session settings.
Every model forbids unknown keys, so a typo in a TOML file is reported instead of ignored.
Presets are TOML files under ``config/`` at the repository root (or ``$LIVEDENOISE_CONFIG_DIR``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class SimulatorConfigError(ValueError):
    """A configuration file or value the simulator cannot use; the message names file, key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class CameraConfig(_Strict):
    """An sCMOS camera: photons -> photoelectrons -> ADU, with per-pixel maps drawn from ``seed``.

    Read noise is specified in electrons rms (as on data sheets) and converted with each pixel's gain.
    The heavy tail of noisy pixels is a log-normal spread of per-pixel read-noise sigma plus a small
    fraction of "noisy pixels" that are ``noisy_pixel_factor`` times worse, as seen on real sCMOS maps.
    """

    name: str = "generic-16bit-scmos"
    width: int = Field(2048, ge=1, le=16384, description="sensor width in pixels")
    height: int = Field(2048, ge=1, le=16384, description="sensor height in pixels")
    bit_depth: int = Field(16, ge=8, le=16)
    quantum_efficiency: float = Field(0.8, gt=0, le=1)
    gain: float = Field(0.45, gt=0, description="median ADU per photoelectron")
    gain_spread: float = Field(0.02, ge=0, lt=0.5, description="pixel-to-pixel relative gain std")
    offset: float = Field(100.0, ge=0, description="median baseline in ADU")
    offset_spread: float = Field(2.0, ge=0, description="pixel-to-pixel offset std in ADU")
    read_noise: float = Field(1.0, ge=0, description="median read noise in electrons rms")
    read_noise_spread: float = Field(0.3, ge=0, description="log-normal sigma of per-pixel read noise")
    noisy_pixel_fraction: float = Field(0.002, ge=0, le=0.1)
    noisy_pixel_factor: float = Field(6.0, ge=1)
    dark_current: float = Field(0.1, ge=0, description="electrons per pixel per second")
    hot_pixel_fraction: float = Field(0.0005, ge=0, le=0.1)
    hot_pixel_dark_current: float = Field(200.0, ge=0, description="electrons per second in hot pixels")
    full_well: float = Field(30000.0, gt=0, description="electrons")
    seed: int = 0


StructureKind = Literal["filaments", "puncta", "mitochondria", "nuclei"]


def _all_structures() -> list[StructureKind]:
    return ["filaments", "puncta", "mitochondria", "nuclei"]


class SampleConfig(_Strict):
    """A virtual fluorescent slide, much larger than the field of view.

    Rates are photons per second per pixel reaching the camera at 100 % light power, after the PSF.
    ``peak_rate`` sets the brightest structures; ``background_rate`` a uniform autofluorescence.
    """

    slide_width: int = Field(2048, ge=16)
    slide_height: int = Field(2048, ge=16)
    structures: list[StructureKind] = Field(default_factory=_all_structures)
    density: float = Field(1.0, gt=0, le=10, description="multiplier on the number of structures per area")
    peak_rate: float = Field(2000.0, gt=0, description="photons/s/pixel of the brightest structures")
    background_rate: float = Field(20.0, ge=0, description="photons/s/pixel everywhere")
    psf_sigma: float = Field(1.0, gt=0, le=10, description="Gaussian PSF sigma in pixels (Wang et al.: 1 px)")
    defocus_sigma_per_um: float = Field(1.5, ge=0, description="extra blur sigma (px) per um of defocus")
    motion: float = Field(0.0, ge=0, le=20, description="rms step of moving puncta, pixels per second")
    drift: tuple[float, float] = Field((0.0, 0.0), description="sample drift (x, y) in pixels per second")
    bleaching_rate: float = Field(0.0, ge=0, description="fraction lost per second of exposure at 100 % power")
    seed: int = 0


class MicroscopeConfig(_Strict):
    """The simulated microscope: a camera preset (or inline camera), a sample, and the acquisition ROI."""

    camera: str | CameraConfig = "generic-16bit-scmos"
    sample: SampleConfig = Field(default_factory=SampleConfig)
    roi_width: int = Field(256, ge=1, le=16384, description="field of view width in pixels (centred on the sensor)")
    roi_height: int = Field(256, ge=1, le=16384)
    pixel_size_um: float = Field(0.1, gt=0)
    exposure_ms: float = Field(20.0, gt=0, le=60000)
    light_power: float = Field(10.0, ge=0, le=100, description="light-source power in percent")
    focus_z_um: float = 0.0
    seed: int = Field(0, description="seed of the shot/read noise stream")

    @model_validator(mode="after")
    def _roi_fits(self) -> MicroscopeConfig:
        if isinstance(self.camera, CameraConfig):
            if self.roi_width > self.camera.width or self.roi_height > self.camera.height:
                raise ValueError(
                    f"roi {self.roi_width}x{self.roi_height} is larger than the sensor "
                    f"{self.camera.width}x{self.camera.height}"
                )
        return self


def config_dir() -> Path:
    """The folder holding the TOML presets.

    ``$LIVEDENOISE_CONFIG_DIR`` when set; else ``config/`` of this checkout (editable installs, where
    users edit the defaults); else the copy a wheel installs as ``simulators/presets`` (pyproject maps
    ``config/`` there), so ``pip install livedenoise`` works outside the checkout.
    """
    env = os.environ.get("LIVEDENOISE_CONFIG_DIR")
    if env:
        if not Path(env).is_dir():
            raise SimulatorConfigError(f"LIVEDENOISE_CONFIG_DIR={env}: no such folder; expected a folder with "
                                       "session.toml, microscope.toml and cameras/ (unset it to use the defaults)")
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "config"
    if (checkout / "cameras").is_dir():
        return checkout
    return Path(__file__).resolve().parent / "presets"


def available_camera_presets() -> list[str]:
    """Names of the camera presets in ``config/cameras``."""
    return sorted(p.stem for p in (config_dir() / "cameras").glob("*.toml"))


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax errors into one sentence naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SimulatorConfigError(f"{path}: configuration file not found")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SimulatorConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise SimulatorConfigError(f"{path}: not valid TOML (the file is not UTF-8 text)") from None
    except OSError as exc:
        raise SimulatorConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """Turn a pydantic error into one readable sentence: file, dotted key, what is allowed."""
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


def validate_model(model_cls: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    """Validate ``data`` into ``model_cls`` with a one-sentence error naming ``source``."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise SimulatorConfigError(describe_validation_error(exc, source)) from None


def load_camera_preset(name: str) -> CameraConfig:
    """Load ``config/cameras/<name>.toml``; an unknown name lists the available presets."""
    path = config_dir() / "cameras" / f"{name}.toml"
    if not path.is_file():
        raise SimulatorConfigError(
            f"unknown camera preset '{name}': available presets are {', '.join(available_camera_presets()) or 'none'} "
            f"(in {config_dir() / 'cameras'})"
        )
    return validate_model(CameraConfig, read_toml(path), str(path))


def resolve_camera(camera: str | CameraConfig) -> CameraConfig:
    """A camera config from a preset name or an inline config."""
    return load_camera_preset(camera) if isinstance(camera, str) else camera


def load_microscope_config(path: str | Path | None = None, **overrides: Any) -> MicroscopeConfig:
    """Load a microscope TOML (default ``config/microscope.toml``), apply keyword overrides, and validate.

    The camera preset is resolved here, so an unknown preset fails at load time with the file named.
    """
    source = Path(path) if path is not None else config_dir() / "microscope.toml"
    data = read_toml(source) if (path is not None or source.is_file()) else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:  # a bad value given on the command line is blamed on the command line, not on the file
        try:
            microscope_from_dict({**data, **given}, "command line")
        except SimulatorConfigError as exc:
            if not any(f"'{k}'" in str(exc) for k in given):
                raise SimulatorConfigError(str(exc).replace("command line", str(source), 1)) from None
            raise
    return microscope_from_dict({**data, **given}, str(source))


def microscope_from_dict(data: dict[str, Any], source: str) -> MicroscopeConfig:
    """Validate a microscope table and resolve its camera preset; errors name ``source`` and the key."""
    cfg: MicroscopeConfig = validate_model(MicroscopeConfig, data, source)
    try:
        camera = resolve_camera(cfg.camera)
    except SimulatorConfigError as exc:
        raise SimulatorConfigError(f"{source}: key 'camera': {exc}") from None
    return validate_model(MicroscopeConfig, {**cfg.model_dump(), "camera": camera.model_dump()}, source)
