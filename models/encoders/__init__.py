"""Frozen perception encoders: `build_encoder(EncoderConfig(...))` -> a `PerceptionEncoder`."""
from __future__ import annotations

import os

import torch

from models.encoders import ast, timesformer, timm_vit  # noqa: F401  (each registers its builder)
from models.encoders.base import ENCODERS, PerceptionEncoder
from models.encoders.config import EncoderConfig
from models.user_errors import MissingFileError

__all__ = ["ENCODERS", "EncoderConfig", "PerceptionEncoder", "build_encoder"]


def build_encoder(cfg: EncoderConfig) -> PerceptionEncoder:
    """Build the encoder `cfg.type` names, frozen (no gradients) and in eval mode (no dropout)."""
    if cfg.checkpoint and not os.path.isfile(cfg.checkpoint):
        raise MissingFileError(f"encoder checkpoint not found: {cfg.checkpoint}")
    encoder = ENCODERS.build(cfg.type, cfg)
    encoder.requires_grad_(False)
    if cfg.dtype not in ("auto", "float32"):  # "auto" unresolved (no accelerator): float32
        encoder.to(getattr(torch, cfg.dtype))
    return encoder.eval()
