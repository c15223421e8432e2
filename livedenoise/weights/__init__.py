"""Pretrained backbones shipped with livedenoise (``backbone-{name}.safetensors``), loaded by
:func:`livedenoise.checkpoint.load_backbone`. This file makes the folder package data."""

#: The backbone used when none is named (``denoise``, ``finetune``, ``evaluate``, ``load_backbone()``): the one that
#: measures best on the dev pairs and the simulator (``benchmarks/bench_backbone.py``; README "Shipped backbones"),
#: not the largest. Kept here, free of torch, so the command line can show it without importing torch.
DEFAULT_BACKBONE = "fast"

#: The backbone ``denoise`` uses for time-lapses when none is named (a causal window of 5 frames, as cheap as
#: the fast 2-D backbone per frame; ``benchmarks/bench_temporal.py``; README "Time-lapses").
TEMPORAL_BACKBONE = "temporal"
