"""Self-supervised objectives read a GAT-of-the-mean network through the transform's bias.

A supervised backbone predicts the generalised Anscombe transform of the clean image, ``GAT(E[e])``, and is
inverted algebraically. Blind-spot and SURE objectives compare its output with *noisy* pixels, whose expectation
in the stabilised domain is ``E[GAT(e)]``: lower by the transform's bias, 0.14-0.19 noise standard deviations at
1-3 photoelectrons. Scored directly, the backbone is charged for that bias; a fine-tune's first hundreds of steps
learn to predict ``E[GAT(e)]`` instead (then inverted with the unbiased inverse), and the SURE check credited that
change of target as an improvement: on a simulated 256² frame at 20 photons, SURE fell 20 % while the output lost
0.41 dB against the sample (``benchmarks/results/2026-12-05-train-layers/probe-calibrated-finetune.json``;
diagnosis in ``benchmarks/results/2026-12-05-gat-target/``).

:class:`ExpectedGatOutput` wraps the network so that the objective sees ``E[GAT]`` predictions
(:meth:`~livedenoise.normalization.Normalizer.expected_gat_torch` of its output) while the weights keep predicting
``GAT(E[e])``: a fine-tune starts exactly where the backbone is, spends its steps on the sample, and keeps the
backbone's algebraic inverse; the SURE check scores backbone and fine-tune on the same target.
"""
from __future__ import annotations

import torch

from livedenoise.normalization import Normalizer


class ExpectedGatOutput(torch.nn.Module):
    """``net``'s output mapped to the expected transformed noisy value (adds no parameters; ``net`` is trained)."""

    def __init__(self, net: torch.nn.Module, normalizer: Normalizer) -> None:
        super().__init__()
        self.net = net
        self.normalizer = normalizer

    @property
    def inner_model(self) -> torch.nn.Module:
        """The wrapped network (what layout and precision choices look at)."""
        return self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalizer.expected_gat_torch(self.net(x).float())


def reads_expected_gat(normalizer: Normalizer) -> bool:
    """Whether a network inverted by ``normalizer`` predicts ``GAT(E[e])`` (so self-supervised objectives must read it
    through :class:`ExpectedGatOutput`): a variance-stabilising normaliser with the algebraic inverse."""
    return normalizer.vst and normalizer.inversion == "algebraic"
