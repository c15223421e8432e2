"""Pretrained backbones shipped with livedenoise (``backbone-{name}.safetensors``), loaded by
:func:`livedenoise.checkpoint.load_backbone`. This file makes the folder package data."""
