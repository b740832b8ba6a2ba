"""Image encoder: a timm model without a CLS token read per stage (CNNs: ConvNeXt, ResNet, EfficientNet ...), with
timm's own preprocessing for the model (`resolve_data_config` + `create_transform`: its resize, crop and statistics).

K counts stages (timm's `feature_info` levels), not blocks. Readouts: mean (each stage's map averaged over its grid;
the last stage as timm's pooled embedding, `forward_head(pre_logits=True)`, through ConvNeXt's head norm where the
model has one) and patches (the map of stage -K, one token per position). A stage narrower than the widest is
zero-padded to its width. Vision Transformers without a CLS token (SigLIP's) are `timm_vit`'s."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import timm
import torch
from timm.data import create_transform, resolve_data_config
from torch import nn

from epalm.common.errors import ConfigError
from epalm.models.encoders.base import ENCODERS, require_own_normalization
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.library_encoder import LibraryEncoder, pad_width
from epalm.models.modalities.image.timm_vit import check_timm_name, load_weight_file


@ENCODERS.register("timm_pooled")
class TimmPooledEncoder(LibraryEncoder):
    modality = "image"
    readouts = ("mean", "patches")

    def __init__(self, model: nn.Module, cfg: EncoderConfig):
        if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
            raise ConfigError(f"timm model '{cfg.name}' gives no per-stage feature maps (forward_intermediates)")
        super().__init__(model)
        self.name = cfg.name
        self.data_config = resolve_data_config({}, model=model)
        size = self.data_config["input_size"]
        with torch.no_grad():  # one probe: the grid and width of every stage, and of timm's pooled embedding
            final, maps = model.forward_intermediates(torch.zeros(1, *size))
            pooled = model.forward_head(final, pre_logits=True)
        self.num_layers = len(maps)
        self.grids = [tuple(m.shape[-2:]) for m in maps]
        self.hidden_size = max(m.shape[1] for m in maps)
        self.head_pools = pooled.shape[-1] == maps[-1].shape[1]  # else (EfficientNet's conv head) the plain mean

    def patch_grid(self, num_tokens: int) -> tuple[int, ...]:
        return self.grids[-num_tokens]

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "mean") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        final, maps = self.model.forward_intermediates(media, indices=num_tokens)
        if readout == "patches":
            return pad_width(maps[0].flatten(2).transpose(1, 2), self.hidden_size)
        if readout != "mean":
            raise ValueError(f"readout must be one of {self.readouts}, got {readout!r}")
        vectors = [m.mean((2, 3)) for m in maps]
        if self.head_pools:
            vectors[-1] = self.model.forward_head(final, pre_logits=True)
        return torch.stack([pad_width(v, self.hidden_size) for v in vectors], dim=1)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """PIL image -> timm's `(3, H, W)` for the model (its training transform in training)."""
        return create_transform(**self.data_config, is_training=train)

    def preprocessing_fingerprint(self) -> dict:
        return {"encoder": "timm_pooled", "name": self.name,
                "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()}}

    @classmethod
    def check_config(cls, cfg: EncoderConfig, key: str) -> None:
        check_timm_name(cfg.name, f"{key}.name", "timm_pooled", "convnext_tiny")

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> TimmPooledEncoder:
        cls.check_config(cfg, "encoder")
        require_own_normalization(cfg, "timm_pooled", "normalises as timm's data config says")
        model = timm.create_model(cfg.name, pretrained=cfg.pretrained, num_classes=0, **cfg.model_kwargs)
        if cfg.checkpoint:
            load_weight_file(model, Path(cfg.checkpoint))
        return TimmPooledEncoder(model.eval(), cfg)
