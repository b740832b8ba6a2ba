"""Video encoder: VideoMAE (transformers `VideoMAEModel`, e.g. MCG-NJU/videomae-base) with its own processor
(`VideoMAEImageProcessor`, every frame resized and cropped alike). The clip has the model's `num_frames` frames (the
encoder section's `num_frames` must match). No CLS token: the readouts are mean and patches (tubelets, frame-major:
(time, rows, columns)); checkpoints with mean pooling have no norm after the last block (their fc_norm belongs to the
classifier), the others `layernorm`."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from transformers import VideoMAEModel

from epalm.common.errors import ConfigError
from epalm.models.encoders.base import ENCODERS
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.transformers_encoder import Tower, HubTowerEncoder, image_input_size


@ENCODERS.register("videomae")
class VideoMAEEncoder(HubTowerEncoder):
    modality = "video"
    family = "VideoMAE model"
    readouts = ("mean", "patches")
    towers = {"videomae": Tower(VideoMAEModel)}

    def __init__(self, model: torch.nn.Module, processor: Any, cfg: EncoderConfig):
        super().__init__(model, processor, cfg)
        config = model.config
        check_clip_length(cfg, config.num_frames, self.family)
        self.hidden_size, self.num_layers = config.hidden_size, config.num_hidden_layers
        height, width = image_input_size(processor)
        self.patch_layout = (config.num_frames // config.tubelet_size, height // config.patch_size,
                             width // config.patch_size)

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "mean") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        out = self.model(pixel_values=media, output_hidden_states=True)  # (B, T, C, H, W)
        return self.last_block_tokens(out.hidden_states, num_tokens, self.model.layernorm, readout, 0)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """Frames `(T, H, W, 3)` uint8 -> the processor's `(T, 3, S, S)`."""
        return VideoProcessorTransform(self.processor)


class VideoProcessorTransform:
    """Frames `(T, H, W, 3)` -> the processor's `pixel_values` of the clip, `(T, 3, H', W')`."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        return self.processor(list(np.asarray(frames)), return_tensors="pt")["pixel_values"][0]


def check_clip_length(cfg: EncoderConfig, trained: int, family: str) -> None:
    """The modality decodes `num_frames` frames; the model's position table (or its frame-mixing tokens) fixes its
    own count."""
    if cfg.num_frames != trained:
        raise ConfigError(f"encoder num_frames {cfg.num_frames} but the {family} reads clips of {trained} frames: set "
                          f"num_frames: {trained}")
