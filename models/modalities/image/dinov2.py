"""Image encoder: DINOv2 (transformers `Dinov2Model`, e.g. facebook/dinov2-large; and `Dinov2WithRegistersModel`)
with its own processor (`BitImageProcessor`). CLS at position 0 (then the register tokens, if any), `layernorm` after
the last block; the position table is interpolated to the processor's crop size."""
from __future__ import annotations

from transformers import Dinov2Model, Dinov2WithRegistersModel

from epalm.models.encoders.base import ENCODERS, READOUTS
from epalm.models.encoders.transformers_encoder import ImageTowerEncoder, Tower


@ENCODERS.register("dinov2")
class Dinov2Encoder(ImageTowerEncoder):
    modality = "image"
    family = "DINOv2"
    readouts = READOUTS
    towers = {"dinov2": Tower(Dinov2Model), "dinov2_with_registers": Tower(Dinov2WithRegistersModel)}
    final_norm = "layernorm"

    @classmethod
    def prefix_tokens(cls, config) -> int:
        return 1 + int(getattr(config, "num_register_tokens", 0))
