"""livedenoise: real-time transfer-learned denoising for Micro-Manager / pycromanager."""
from __future__ import annotations

__version__ = "0.1.0"

from livedenoise.errors import LivedenoiseError  # noqa: E402

__all__ = ["__version__", "LivedenoiseError"]
