"""Video encoder: transformers' TimeSformer (divided space-time), read out as its last K CLS tokens."""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from timm.data.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from torch import nn
from transformers import TimesformerConfig, TimesformerModel

from epalm.common.errors import ConfigError, loading
from epalm.models.encoders.base import ENCODERS, READOUTS
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.library_encoder import LibraryEncoder, read_preprocessor_config
from epalm.models.modalities.video.modality import VideoTransform
from epalm.models.modalities.video.timesformer_original import load_original_timesformer

logger = logging.getLogger(__name__)

# What the original TimeSformer was trained with (facebookresearch/TimeSformer config defaults).
TIMESFORMER_MEAN = (0.45, 0.45, 0.45)
TIMESFORMER_STD = (0.225, 0.225, 0.225)


@ENCODERS.register("timesformer")
class TimesformerEncoder(LibraryEncoder):
    modality = "video"
    readouts = READOUTS

    def __init__(self, model: TimesformerModel, cfg: EncoderConfig, mean: Sequence[float], std: Sequence[float]):
        super().__init__(model)
        self.name = cfg.name or str(cfg.checkpoint or "random-init")
        self.hidden_size = model.config.hidden_size
        self.num_layers = model.config.num_hidden_layers
        self.num_frames = model.config.num_frames
        self.image_size = int(model.config.image_size)
        side = self.image_size // int(model.config.patch_size)
        self.patch_layout = (self.num_frames, side, side)
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        if media.ndim != 5 or media.shape[2] != self.num_frames:
            raise ValueError(f"expected videos (B, C, {self.num_frames}, H, W), got {tuple(media.shape)}")
        out = self.model(pixel_values=media.transpose(1, 2), output_hidden_states=True)  # wants (B, T, C, H, W)
        tokens = self.last_block_tokens(out.hidden_states, num_tokens, self.model.layernorm, readout, 1)
        if readout == "patches":  # TimeSformer orders them patch by patch, each over time: frame by frame here
            batch, _, width = tokens.shape
            tokens = tokens.view(batch, -1, self.num_frames, width).transpose(1, 2).reshape(batch, -1, width)
        return tokens

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        return VideoTransform(self.image_size, self.mean, self.std, train)

    def preprocessing_fingerprint(self) -> dict:
        return {
            "encoder": "timesformer",
            "name": self.name,
            "size": self.image_size,
            "resize": "squash",
            "interpolation": "bicubic",
            "mean": list(self.mean),
            "std": list(self.std),
            "num_frames": self.num_frames,
            "frame_sampling": "segment-middle",
        }

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> TimesformerEncoder:
        overrides = dict(cfg.model_kwargs)
        if "num_frames" in overrides:
            raise ConfigError("set the clip length with the encoder's `num_frames`, not model_kwargs.num_frames")
        if cfg.checkpoint:
            model, _ = load_original_timesformer(cfg.checkpoint, overrides)
        elif cfg.pretrained:
            if not cfg.name:
                raise ConfigError("encoder type 'timesformer' with pretrained: true needs `name` (hub id or folder)")
            with loading("TimeSformer", cfg.name):
                model = TimesformerModel.from_pretrained(cfg.name, **overrides)
        else:
            if cfg.name:
                with loading("TimeSformer config", cfg.name):
                    config = TimesformerConfig.from_pretrained(cfg.name, **overrides)
            else:
                config = TimesformerConfig(**overrides)
            config.num_frames = cfg.num_frames
            model = TimesformerModel(config)
        match_num_frames(model, cfg.num_frames)

        if cfg.normalization == "clip":
            mean, std = tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD)
        else:
            folder = read_preprocessor_config(cfg.name) if cfg.name and not cfg.checkpoint else {}
            mean = tuple(folder.get("image_mean", TIMESFORMER_MEAN))
            std = tuple(folder.get("image_std", TIMESFORMER_STD))
        return TimesformerEncoder(model.eval(), cfg, mean, std)


def match_num_frames(model: TimesformerModel, num_frames: int) -> None:
    """Serve `num_frames`-frame clips with weights trained on another length (eP-ALM: 16-frame captioning
    with the 8-frame K600 model). The time embeddings are resized by nearest neighbour, the same resize
    transformers' TimeSformer embeddings apply on the fly; its blocks read the clip length from the config,
    so the config is updated too."""
    trained = model.config.num_frames
    if trained == num_frames:
        return
    embeddings = model.embeddings
    if hasattr(embeddings, "time_embeddings"):
        table = embeddings.time_embeddings.data.transpose(1, 2)  # (1, d, T)
        resized = nn.functional.interpolate(table, size=num_frames, mode="nearest").transpose(1, 2)
        embeddings.time_embeddings = nn.Parameter(resized.contiguous(), requires_grad=False)
    model.config.num_frames = num_frames
    logger.info("TimeSformer trained on %d frames serves %d-frame clips (time embeddings resized)", trained, num_frames)

