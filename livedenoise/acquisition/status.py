"""What a live session reports to its user interface: state, speeds, fine-tuning progress, drops.

The live session owns one :class:`SessionStatus` and publishes copies; the viewer and the CLI only read
them, so the UI never reaches into the acquisition threads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class SessionState(str, Enum):
    """The session state machine: IDLE -> CALIBRATING -> LIVE <-> FINE_TUNING -> ... -> STOPPED."""

    IDLE = "idle"
    CALIBRATING = "calibrating"
    LIVE = "live"
    FINE_TUNING = "fine-tuning"  # live frames keep coming; a model is adapting in the background
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class SessionStatus:
    """A snapshot of the session for display (all times in seconds unless named otherwise)."""

    state: SessionState = SessionState.IDLE
    model_name: str = ""
    adapted: bool = False  # True once the fine-tuned model has been swapped in
    finetune_progress: float = 0.0  # 0..1
    finetune_loss: float | None = None
    finetune_elapsed_s: float = 0.0
    frames_acquired: int = 0
    frames_denoised: int = 0
    frames_dropped: int = 0  # display frames skipped because the model was slower than the camera
    frames_written: int = 0  # denoised frames recorded by the DenoisedWriter
    camera_fps: float = 0.0
    denoised_fps: float = 0.0
    latency_ms: float = 0.0  # camera frame -> denoised frame available
    message: str = ""
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One status line for a viewer or a terminal."""
        parts = [f"{self.state.value.upper()}", f"model {self.model_name or '-'}{' (adapted)' if self.adapted else ''}"]
        if self.state == SessionState.FINE_TUNING:
            loss = f", loss {self.finetune_loss:.4g}" if self.finetune_loss is not None else ""
            parts.append(f"fine-tuning {self.finetune_progress:.0%}{loss}")
        parts.append(f"camera {self.camera_fps:.1f} fps | denoised {self.denoised_fps:.1f} fps | "
                     f"latency {self.latency_ms:.0f} ms")
        # frames the display had no time to denoise: every one is still saved raw and denoised ("dropped" read as lost)
        parts.append(f"display skipped {self.frames_dropped} (all saved)")
        if self.message:
            parts.append(self.message)
        return " · ".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["state"] = self.state.value
        return d
