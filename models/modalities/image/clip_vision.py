"""Image encoder: CLIP's vision tower (transformers `CLIPVisionModel`, e.g. openai/clip-vit-large-patch14-336) with
its own `CLIPImageProcessor`; CLS at position 0, `post_layernorm` after the last block."""
from __future__ import annotations

from transformers import CLIPVisionModel

from epalm.models.encoders.base import ENCODERS, READOUTS
from epalm.models.encoders.transformers_encoder import ImageTowerEncoder, Tower


@ENCODERS.register("clip_vision")
class CLIPVisionEncoder(ImageTowerEncoder):
    modality = "image"
    family = "CLIP vision tower"
    readouts = READOUTS
    # CLIPVisionModel reads a full CLIPModel folder's vision weights too (its text tower is left out)
    towers = {"clip_vision_model": Tower(CLIPVisionModel), "clip": Tower(CLIPVisionModel)}
    final_norm = "post_layernorm"

