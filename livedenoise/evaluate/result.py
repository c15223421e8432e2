"""An evaluation's result (every score row, the settings, the machine): what the runs produce and the report reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from livedenoise.evaluate.methods import Row
from livedenoise.evaluate.settings import EvalConfig


@dataclass
class EvalResult:
    """Rows, machine, configuration and the files written."""

    rows: list[Row]
    config: EvalConfig
    machine: dict
    backbone: str
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    source: str = "simulator"

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "machine": self.machine, "backbone": self.backbone,
                "seconds": self.seconds, "source": self.source, "rows": [r.to_dict() for r in self.rows]}
