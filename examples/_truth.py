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


class RecordedTruth:
    """An MDA listener (``frameReady``) that keeps the simulator's truth of every acquired frame by its named axes,
    then scores the denoised frames the recorder saved (what a user keeps, not only what was shown)."""

    def __init__(self, microscope, sequence) -> None:
        from livedenoise.attach.mda import channel_names

        self.microscope = microscope
        self.names = channel_names(sequence)
        self.truth: dict[tuple, np.ndarray] = {}

    def frameReady(self, image, event, meta=None) -> None:  # noqa: N802 - pymmcore-plus API
        from livedenoise.attach.mda import useq_axes

        truth = self.microscope.lookup(image)
        if truth is not None:
            self.truth[tuple(sorted(useq_axes(event, self.names).items()))] = truth.truth

    def lines(self, denoised_path) -> list[str]:
        from ndstorage import Dataset

        ds = Dataset(str(denoised_path))
        per_channel: dict[str, list[float]] = defaultdict(list)
        for key, truth in self.truth.items():
            axes = dict(key)
            per_channel[str(axes.get("channel", "-"))].append(score(truth, ds.read_image(**axes)).psnr)
        ds.close()
        return [f"  channel {channel}: {len(values)} recorded frames scored against the simulator's truth: "
                f"{np.mean(values):.2f} dB" for channel, values in sorted(per_channel.items())]
