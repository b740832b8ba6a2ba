"""Video encoder: X-CLIP's vision tower (transformers `XCLIPModel(...).vision_model`, e.g. microsoft/xclip-base-patch32)
with its own processor (`VideoMAEImageProcessor`). The tower reads every frame (with a message token per frame that
mixes them); CLS at position 0 of every frame, `post_layernorm` after the last block. Readouts: cls and mean (averaged
over the clip's frames too) and patches (every frame's, frame by frame). X-CLIP's video-level head (the multi-frame
integration transformer and prompts) belongs to the full model and is not read. The clip has the model's
`num_frames` frames."""
from __future__ import annotations

from typing import Any, Callable

import torch
from transformers import XCLIPModel, XCLIPVisionModel

from epalm.models.encoders.base import ENCODERS, READOUTS
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.transformers_encoder import Tower, HubTowerEncoder, image_input_size
from epalm.models.modalities.video.videomae import VideoProcessorTransform, check_clip_length


@ENCODERS.register("xclip_vision")
class XCLIPVisionEncoder(HubTowerEncoder):
    modality = "video"
    family = "X-CLIP vision tower"
    readouts = READOUTS
    # XCLIPVisionModel.from_pretrained on a full X-CLIP folder loads nothing: the full model's `vision_model` it is
    towers = {"xclip": Tower(XCLIPModel, "vision_model"), "xclip_vision_model": Tower(XCLIPVisionModel)}

    def __init__(self, model: torch.nn.Module, processor: Any, cfg: EncoderConfig):
        super().__init__(model, processor, cfg)
        config = model.config
        check_clip_length(cfg, config.num_frames, self.family)
        self.num_frames = config.num_frames
        self.hidden_size, self.num_layers = config.hidden_size, config.num_hidden_layers
        height, width = image_input_size(processor)
        self.patch_layout = (self.num_frames, height // config.patch_size, width // config.patch_size)

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        batch, frames = media.shape[:2]  # (B, T, C, H, W): the tower reads (B * T, C, H, W)
        out = self.model(pixel_values=media.flatten(0, 1), output_hidden_states=True)
        # per frame, as every tower's: (B * T, K, d), or the patch tokens (B * T, P, d)
        tokens = self.last_block_tokens(out.hidden_states, num_tokens, self.model.post_layernorm, readout, 1)
        if readout == "patches":
            return tokens.reshape(batch, -1, tokens.shape[-1])  # frame by frame
        return tokens.view(batch, frames, *tokens.shape[1:]).mean(1)  # cls, mean: averaged over the clip's frames

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """Frames `(T, H, W, 3)` uint8 -> the processor's `(T, 3, S, S)`."""
        return VideoProcessorTransform(self.processor)
