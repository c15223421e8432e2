"""Score the frames an example shows against the simulated microscope's ground truth (examples only)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from livedenoise.acquisition.display import DenoisedFrame
from livedenoise.metrics import score


class TruthScores:
    """A display callback: PSNR of each shown raw and denoised frame against the simulator's truth, per channel."""

    def __init__(self, microscope) -> None:
        self.microscope = microscope
        self.psnr: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def __call__(self, frame: DenoisedFrame) -> None:
        truth = self.microscope.lookup(frame.raw) if frame.raw is not None else None
        if truth is None or frame.denoised is None:
            return
        channel = str(frame.info["axes"].get("channel", "-"))
        self.psnr[channel].append((score(truth.truth, frame.raw).psnr, score(truth.truth, frame.denoised).psnr))

    def lines(self) -> list[str]:
        out = []
        for channel, pairs in sorted(self.psnr.items()):
            raw, den = np.mean(pairs, axis=0)
            out.append(f"  channel {channel}: {len(pairs)} displayed frames scored against the simulator's truth: "
                       f"raw {raw:.2f} dB -> denoised {den:.2f} dB")
        return out
