"""Image encoder: any timm Vision Transformer, read out as the CLS token of its last K blocks."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from safetensors.torch import load_file
from timm.data import resolve_data_config
from timm.data.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from torch import nn

from epalm.common.errors import ConfigError, DataFormatError, did_you_mean
from epalm.models.encoders.base import ENCODERS, READOUTS
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.library_encoder import LibraryEncoder
from epalm.models.modalities.image.modality import image_transform
from epalm.models.partitioned_params import gathered


@ENCODERS.register("timm_vit")
class TimmViTEncoder(LibraryEncoder):
    modality = "image"
    test_resize = "squash"  # the test-time resize ignores the aspect ratio (the run counts the non-square images)
    readouts = READOUTS

    def __init__(self, model: nn.Module, cfg: EncoderConfig):
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
            raise ConfigError(f"timm model '{cfg.name}' is not a Vision Transformer (no blocks of tokens): read it "
                              "with encoder type timm_pooled")
        super().__init__(model)
        if getattr(model, "cls_token", None) is None:  # SigLIP-style ViTs: no CLS token to read
            self.readouts = ("mean", "patches")
        self.name = cfg.name
        self.hidden_size = model.embed_dim
        self.num_layers = len(model.blocks)
        data_cfg = resolve_data_config({}, model=model)
        # pretrained_cfg keeps the tag's 224 even when model_kwargs changed img_size: trust the built model.
        self.image_size = int(model.patch_embed.img_size[0])
        self.patch_layout = tuple(int(n) for n in model.patch_embed.grid_size)
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
                norm=False,  # the final norm is applied below to the tokens read only (it works per token)
                return_prefix_tokens=True,
                output_fmt="NLC",
                intermediates_only=True,
            )
        return self.split_prefix_tokens(per_block, self.model.norm, readout)

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

    @classmethod
    def check_config(cls, cfg: EncoderConfig, key: str) -> None:
        check_timm_name(cfg.name, f"{key}.name")

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> TimmViTEncoder:
        check_timm_name(cfg.name)
        kwargs: dict[str, Any] = {"num_classes": 0, **cfg.model_kwargs}  # the classifier head is never used
        model = timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs)
        if cfg.checkpoint:
            load_weight_file(model, Path(cfg.checkpoint))
        return TimmViTEncoder(model.eval(), cfg)


def check_timm_name(name: str, key: str = "encoder name", encoder_type: str = "timm_vit",
                    example: str = "vit_base_patch16_224") -> None:
    """A name timm knows (tags allowed); `hf-hub:` and other prefixed sources are left to timm."""
    if not name:
        raise ConfigError(f"{key}: encoder type '{encoder_type}' needs a timm model name such as {example}")
    if ":" not in name and not timm.is_model(name):
        raise ConfigError(f"{key} '{name}' is not a timm model"
                          f"{did_you_mean(name.split('.')[0], timm.list_models())} (see timm.list_models())")


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """A timm checkpoint: safetensors, or a torch pickle read with weights_only (never executed); the
    `state_dict` / `model` / `state_dict_ema` wrappers of training scripts are unwrapped."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataFormatError(f"{path}: not a safetensors file nor a torch checkpoint readable with weights_only "
                              f"({type(error).__name__}: {error})") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise DataFormatError(f"{path}: expected a mapping of weight names to tensors (a timm state dict)")
    return {k.removeprefix("module."): v for k, v in blob.items()}


def load_weight_file(model: nn.Module, path: Path) -> None:
    """Our own reading of a local ViT checkpoint, whatever timm version guesses about file types (timm 1.0.29
    reads any file of a ViT as a JAX .npz). The model family's own `checkpoint_filter_fn` adapts the tensors
    (position table resized to the configured image size, timm's older layouts); the classifier head, which the
    encoder never uses, is dropped; anything else that does not fit is an error naming the file and the keys."""
    if path.suffix == ".npz":  # the original JAX/Flax release: timm's own reader for it, chosen by the suffix
        model.load_pretrained(str(path))
        return
    state = read_weight_file(path)
    checkpoint_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if checkpoint_filter is not None:
        state = checkpoint_filter(state, model)
    own = model.state_dict()
    classifier = model.default_cfg.get("classifier") or "head"  # ViTs' head, ResNets' fc, ConvNeXts' head.fc
    state = {k: v for k, v in state.items() if not (k.startswith(f"{classifier}.") and k not in own)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        shapes = [f"{k}: model {tuple(own[k].shape)}, file {tuple(state[k].shape)}" for k in wrong[:10]]
        raise DataFormatError(f"{path} does not fit timm model '{model.default_cfg.get('architecture', '?')}': "
                              f"missing {missing[:10]}, unexpected {unexpected[:10]}, shapes {shapes}")
    model.load_state_dict(state)

