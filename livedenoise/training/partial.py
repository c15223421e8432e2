"""Which of a backbone's weights a fine-tune may change (``[training] adapt_layers``).

Why: a few pairs or one noisy image hold little information, and changing every weight of a strong pretrained
backbone fits their noise as readily as their signal. Freezing part of the network restricts what can change:
the decoder half (the encoder's features stay the ones learned on the large bank), only the last level and the
head, or only the biases (BitFit, Ben Zaken et al. 2022: intensity and offset corrections). A frozen encoder is
also cheaper to train through: autograd does not propagate into weights that need no gradient, so more steps fit
the same time budget.
"""
from __future__ import annotations

from typing import Literal

from torch import nn

from livedenoise.errors import ConfigError

AdaptLayers = Literal["all", "decoder", "last", "bias"]


def _decoder_modules(model: nn.Module, part: AdaptLayers) -> list[nn.Module]:
    ups, decoders, head = getattr(model, "ups", None), getattr(model, "decoders", None), getattr(model, "head", None)
    if not isinstance(ups, nn.ModuleList) or not isinstance(decoders, nn.ModuleList) or head is None:
        raise ConfigError(f"adapt_layers = {part!r} needs a U-Net with up-sampling, decoder blocks and a head; "
                          f"{type(model).__name__} has none: use adapt_layers = 'all' or 'bias'.")
    if part == "decoder":
        return [*ups, *decoders, head]
    return [ups[-1], decoders[-1], head] if len(decoders) else [head]


def select_trainable(model: nn.Module, part: AdaptLayers) -> list[nn.Parameter]:
    """Mark the parameters of ``part`` trainable and every other one frozen (``requires_grad``); return the former.

    The model is changed in place: call this on the copy being fine-tuned, never on a shared backbone.
    """
    if part == "all":
        chosen = list(model.parameters())
    elif part == "bias":
        chosen = [p for name, p in model.named_parameters() if name.endswith("bias")]
    elif part in ("decoder", "last"):
        chosen = [p for m in _decoder_modules(model, part) for p in m.parameters()]
    else:
        raise ConfigError(f"adapt_layers {part!r} is unknown; expected one of all, decoder, last, bias.")
    keep = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    if not chosen:
        raise ConfigError(f"adapt_layers = {part!r} leaves nothing to train in {type(model).__name__}.")
    return chosen
