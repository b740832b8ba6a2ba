"""Frozen perception encoders: `build_encoder(EncoderConfig(...))` -> a `PerceptionEncoder`.

The encoders themselves live with their modality (models/modalities/<modality>/), found by one rule: every
module under models/modalities is imported at the registry's first lookup (common/registry.py)."""
from __future__ import annotations

import os

import torch

from epalm.common.errors import MissingFileError
from epalm.models.encoders.base import ENCODERS, PerceptionEncoder
from epalm.models.encoders.config import EncoderConfig

__all__ = ["ENCODERS", "EncoderConfig", "PerceptionEncoder", "build_encoder", "encoder_modality"]


def build_encoder(cfg: EncoderConfig) -> PerceptionEncoder:
    """Build the encoder `cfg.type` names, frozen (no gradients) and in eval mode (no dropout)."""
    if cfg.checkpoint and not os.path.isfile(cfg.checkpoint):
        raise MissingFileError(f"encoder checkpoint not found: {cfg.checkpoint}")
    encoder = ENCODERS.get(cfg.type).from_config(cfg)
    encoder.requires_grad_(False)
    if cfg.dtype not in ("auto", "float32"):  # "auto" unresolved (no accelerator): float32
        encoder.to(getattr(torch, cfg.dtype))
    return encoder.eval()


def encoder_modality(cfg: EncoderConfig) -> str:
    """The modality an encoder section's type reads (its key under `model.encoders`)."""
    return ENCODERS.get(cfg.type).modality
