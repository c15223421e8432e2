"""What a batch job did: per-input counts, warnings and failures, and the report printed at the end."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from livedenoise.diskspace import format_bytes as _format_bytes


@dataclass
class ItemSummary:
    """One input's outcome."""

    input: str
    output: str
    format: str
    axes: str
    shape: tuple[int, ...]
    input_dtype: str
    output_dtype: str
    blocks: int
    block_shape: tuple[int, ...]
    block_bytes: int
    status: str = "planned"  # planned | done | already complete
    blocks_resumed: int = 0  # finished by an earlier run
    frames: int = 0  # denoised by this run
    pixels: int = 0
    clipped: int = 0  # whole output, earlier runs included
    seconds: float = 0.0
    noise_model: str = ""  # how the noise model was obtained, one line per channel
    #: frames read beyond each side of a block along each leading axis (a temporal network's neighbours)
    block_context: tuple[int, ...] = ()


@dataclass
class BatchSummary:
    """What :func:`denoise_dataset` did (or, with ``dry_run``, would do)."""

    items: list[ItemSummary] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    output_dir: str = ""
    elapsed_s: float = 0.0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: inputs that could not be denoised in a multi-input batch: {"input": path, "error": one sentence}
    failed: list[dict[str, str]] = field(default_factory=list)
    #: how a temporal model ran: "its second pass", "the fusion alone (--no-second-pass)"; "" for 2-D models
    temporal_mode: str = ""

    @property
    def frames(self) -> int:
        return sum(i.frames for i in self.items)

    @property
    def megapixels(self) -> float:
        return sum(i.pixels for i in self.items) / 1e6

    @property
    def mpx_per_s(self) -> float:
        busy = sum(i.seconds for i in self.items)
        return self.megapixels / busy if busy > 0 else 0.0

    @property
    def clipped(self) -> int:
        return sum(i.clipped for i in self.items)

    def report(self) -> str:
        lines = []
        model = "; ".join(dict.fromkeys(f"{m['name']} ({m.get('path') or 'in memory'}, sha256 {m['sha256'][:12]})"
                                        for m in self.models))
        if self.dry_run:
            lines.append(f"Dry run: nothing was written. Model: {model}.")
            lines += [f"  {n}" for n in self.notes]
            for it in self.items:
                lines.append(f"- {it.input}\n    {it.format}, axes {it.axes} {tuple(it.shape)}, {it.input_dtype} -> "
                             f"{it.output} ({it.output_dtype})\n    {it.blocks} block(s) of {tuple(it.block_shape)}, "
                             f"~{_format_bytes(it.block_bytes)} each{_context_text(it)}; {it.status}"
                             + (f", {it.blocks_resumed} already done" if it.blocks_resumed else ""))
            lines += [f"FAILED: {f['input']}: {f['error']}" for f in self.failed]
            return "\n".join(lines)
        failed = {f["input"] for f in self.failed}
        for it in self.items:
            if it.input in failed:
                continue
            lines.append(f"{it.status}: {it.input} -> {it.output} ({it.frames} frames this run"
                         + (f", {it.blocks_resumed} of {it.blocks} blocks from an earlier run"
                            if it.blocks_resumed else "")
                         + (f", {it.clipped} pixels clipped to {it.output_dtype}" if it.clipped else "") + ")"
                         + (f"\n    {it.noise_model}" if it.noise_model else ""))
        lines.append(f"Denoised {self.frames} frames ({self.megapixels:.1f} Mpx) in {self.elapsed_s:.1f} s, "
                     f"{self.mpx_per_s:.2f} Mpx/s while denoising, with {model}"
                     + (f", {self.temporal_mode}" if self.temporal_mode else "") + ".")
        if self.adapted:
            lines.append("Adapted model(s) saved: " + ", ".join(self.adapted))
        lines.append(f"Output folder: {self.output_dir}")
        lines += [f"FAILED: {f['input']}: {f['error']}" for f in self.failed]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _context_text(it: ItemSummary) -> str:
    """", each read with N more frames on each side along T ..." for blocks read with their neighbours, else ""."""
    parts = [f"{c} more {'frames' if a == 'T' else 'slices'} on each side along {a}"
             for a, c, n, b in zip(it.axes, it.block_context, it.shape, it.block_shape, strict=False) if c and b < n]
    return f", each read with {' and '.join(parts)} (the temporal network's neighbours)" if parts else ""
