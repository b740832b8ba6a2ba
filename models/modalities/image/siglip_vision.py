"""Image encoder: SigLIP's vision tower (transformers `SiglipVisionModel`, e.g. google/siglip-so400m-patch14-384), and
SigLIP 2's fixed-resolution checkpoints, which are the same architecture (google/siglip2-base-patch16-224 ...), with
their own `SiglipImageProcessor`. No CLS token (the readouts are mean and patches); `post_layernorm` after the last
block. SigLIP 2's NaFlex checkpoints (`Siglip2VisionModel`: patches of a variable grid, three input tensors) are not
read here; open_clip's SigLIP 2 (`timm/ViT-L-16-SigLIP2-384`) is, by the `open_clip` encoder."""
from __future__ import annotations

from transformers import SiglipVisionModel

from epalm.models.encoders.base import ENCODERS
from epalm.models.encoders.transformers_encoder import ImageTowerEncoder, Tower


@ENCODERS.register("siglip_vision")
class SiglipVisionEncoder(ImageTowerEncoder):
    modality = "image"
    family = "SigLIP vision tower"
    readouts = ("mean", "patches")
    towers = {"siglip_vision_model": Tower(SiglipVisionModel), "siglip": Tower(SiglipVisionModel)}
    final_norm = "post_layernorm"

    @classmethod
    def prefix_tokens(cls, config) -> int:
        return 0
