"""Image encoder: any timm Vision Transformer, read out as the CLS token of its last K blocks."""
from __future__ import annotations

from typing import Any, Callable

import timm
import torch
from timm.data import resolve_data_config
from timm.data.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from torch import nn

from models.encoders.base import ENCODERS
from models.encoders.config import EncoderConfig
from models.encoders.library_encoder import LibraryEncoder
from models.modalities.image import image_transform
from models.partitioned_params import gathered
from models.user_errors import ConfigError, did_you_mean


class TimmViTEncoder(LibraryEncoder):
    modality = "image"

    def __init__(self, model: nn.Module, cfg: EncoderConfig):
        if getattr(model, "cls_token", None) is None:
            raise ConfigError(f"timm model '{cfg.name}' has no class token; eP-ALM reads the CLS token of each block")
        super().__init__(model)
        self.name = cfg.name
        self.hidden_size = model.embed_dim
        self.num_layers = len(model.blocks)
        data_cfg = resolve_data_config({}, model=model)
        # pretrained_cfg keeps the tag's 224 even when model_kwargs changed img_size: trust the built model.
        self.image_size = int(model.patch_embed.img_size[0])
        self.interpolation = data_cfg["interpolation"]
        if cfg.normalization == "clip":
            self.mean, self.std = tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD)
        else:
            self.mean, self.std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        # DeepSpeed ZeRO-3 gathers a module's own weights (class token, position table) when the module is called;
        # forward_intermediates is not the ViT's forward, so they are gathered here (a no-op when not partitioned).
        with gathered(self.model.parameters(recurse=False)):
            per_block = self.model.forward_intermediates(
                media,
                indices=num_tokens,  # an int takes the last `num_tokens` blocks
                norm=True,  # through the final norm, as eP-ALM reads them
                return_prefix_tokens=True,
                output_fmt="NLC",
                intermediates_only=True,
            )
        # each entry is (patch tokens, prefix tokens); prefix position 0 is the class token
        if readout == "mean":
            return torch.stack([patches.mean(1) for patches, _ in per_block], dim=1)
        return torch.stack([prefix[:, 0] for _, prefix in per_block], dim=1)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """PIL image -> `(3, S, S)`. Test: squash-resize to S x S; train: crop, flip, RandAugment."""
        return image_transform(self.image_size, self.interpolation, self.mean, self.std, train)

    def preprocessing_fingerprint(self) -> dict:
        return {
            "encoder": "timm_vit",
            "name": self.name,
            "size": self.image_size,
            "resize": "squash",
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }



def check_timm_name(name: str) -> None:
    """A name timm knows (tags allowed); `hf-hub:` and other prefixed sources are left to timm."""
    if not name:
        raise ConfigError("encoder type 'timm_vit' needs `name`, a timm model name such as vit_base_patch16_224")
    if ":" not in name and not timm.is_model(name):
        raise ConfigError(f"model.encoder.name '{name}' is not a timm model"
                          f"{did_you_mean(name.split('.')[0], timm.list_models())} (see timm.list_models())")


@ENCODERS.register("timm_vit")
def build_timm_vit(cfg: EncoderConfig) -> TimmViTEncoder:
    check_timm_name(cfg.name)
    kwargs: dict[str, Any] = {"num_classes": 0, **cfg.model_kwargs}  # the classifier head is never used
    if cfg.checkpoint:
        # timm's own loader reads the file, unwraps `state_dict`/`model` and drops a mismatched head
        kwargs["pretrained_cfg_overlay"] = dict(file=str(cfg.checkpoint))
    model = timm.create_model(cfg.name, pretrained=bool(cfg.pretrained or cfg.checkpoint), **kwargs)
    return TimmViTEncoder(model.eval(), cfg)
