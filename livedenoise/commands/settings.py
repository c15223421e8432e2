"""Settings of the commands that run the simulated microscope: the session's plus the simulator's ``[microscope]``.

Why here, in the command layer: the product's settings (:mod:`livedenoise.config`) must not depend on the
simulator, yet ``livedenoise demo``, ``live --simulate`` and ``simulate`` read one TOML file with all three
tables. A session on the simulated microscope images at the microscope's configured exposure and light
power unless ``[live]`` sets its own (:meth:`Settings.for_simulator`); a session on real hardware
(``live --mm``) never takes its illumination from the simulator's file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from livedenoise.config import SessionSettings, describe_validation_error, read_toml, settings_dir
from livedenoise.errors import ConfigError
from simulators.config import MicroscopeConfig, SimulatorConfigError, load_microscope_config, microscope_from_dict


class Settings(SessionSettings):
    """A session's settings plus the simulated microscope (``[microscope]``, default ``config/microscope.toml``)."""

    microscope: MicroscopeConfig = Field(default_factory=MicroscopeConfig)

    def for_simulator(self) -> Settings:
        """These settings with the simulated microscope's exposure and light power as the live illumination
        wherever ``[live]`` leaves them unset."""
        live = self.live.model_copy(update={
            "exposure_ms": self.live.exposure_ms if self.live.exposure_ms is not None else self.microscope.exposure_ms,
            "light_power": self.live.light_power if self.live.light_power is not None else self.microscope.light_power,
        })
        return self.model_copy(update={"live": live})


def load_settings(path: str | Path | None = None) -> Settings:
    """Load a TOML file with ``[microscope]``, ``[training]`` and ``[live]`` tables.

    Without a path, ``session.toml`` in :func:`livedenoise.config.settings_dir` is used if present, else the
    defaults, and the microscope comes from ``config/microscope.toml``. Errors name the file, the key and
    what is allowed.
    """
    source = Path(path) if path is not None else settings_dir() / "session.toml"
    data: dict[str, Any] = read_toml(source) if (path is not None or source.is_file()) else {}
    micro = data.pop("microscope", None)
    try:
        session = SessionSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(source))) from None
    try:
        microscope = (load_microscope_config() if micro is None
                      else microscope_from_dict(micro, f"{source} [microscope]"))
    except SimulatorConfigError as exc:
        raise ConfigError(str(exc)) from None
    return Settings(training=session.training, live=session.live, microscope=microscope)
