"""Image encoder: an open_clip model's image tower (`open_clip_torch`, an optional extra: `pip install
"epalm-trainer[open_clip]"`) with open_clip's own transforms (`preprocess_val`; `preprocess_train` in training).

`name` is what `open_clip.create_model_and_transforms` takes: `hf-hub:ORG/REPO` (e.g. hf-hub:timm/ViT-L-16-SigLIP2-384,
DMI's SigLIP 2) or `local-dir:FOLDER` (a folder with open_clip_config.json and the weights), whose weights load with
`pretrained: true`; or an architecture name (ViT-L-14-336), with `checkpoint` a weight file of it (no checkpoint:
random weights). Towers read: open_clip's own ViT (CLS at 0, `ln_post` after the last block) and a timm ViT trunk
(`timm_model_name`: SigLIP's, with no CLS token, `trunk.norm`); CNN towers (ModifiedResNet, ConvNeXt) are not."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from epalm.common.errors import ConfigError, MissingFileError, did_you_mean, loading
from epalm.models.encoders.base import ENCODERS, READOUTS, require_own_normalization
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.library_encoder import LibraryEncoder

SCHEMAS = ("hf-hub:", "local-dir:")
CONFIG_FILE = "open_clip_config.json"  # architecture and preprocessing of a local-dir: folder
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def open_clip_library():
    try:
        return importlib.import_module("open_clip")
    except ImportError:
        raise ConfigError("encoder type 'open_clip' needs open_clip_torch: pip install 'epalm-trainer[open_clip]' "
                          "(or pip install open_clip_torch)") from None


@ENCODERS.register("open_clip")
class OpenCLIPEncoder(LibraryEncoder):
    modality = "image"
    readouts = READOUTS

    def __init__(self, visual: nn.Module, transforms: tuple[Callable, Callable], cfg: EncoderConfig):
        super().__init__(visual)
        self.name = cfg.name
        self.train_transform, self.test_transform = transforms
        trunk = getattr(visual, "trunk", None)
        if hasattr(visual, "transformer") and hasattr(visual, "class_embedding"):  # open_clip's own ViT
            self.trunk, self.final_norm = None, visual.ln_post
            self.hidden_size, self.num_layers = visual.transformer.width, len(visual.transformer.resblocks)
            self.patch_layout = tuple(int(n) for n in visual.grid_size)
        elif trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "forward_intermediates"):
            self.trunk, self.final_norm = trunk, trunk.norm  # a timm ViT inside open_clip's TimmModel
            self.hidden_size, self.num_layers = trunk.embed_dim, len(trunk.blocks)
            self.patch_layout = tuple(int(n) for n in trunk.patch_embed.grid_size)
            if getattr(trunk, "cls_token", None) is None:
                self.readouts = ("mean", "patches")
        else:
            raise ConfigError(f"open_clip model '{cfg.name}' has a {type(visual).__name__} image tower; encoder type "
                              "'open_clip' reads ViT towers (open_clip's own or a timm ViT trunk)")

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        if self.trunk is None:
            out = self.model.forward_intermediates(media, indices=num_tokens, output_fmt="NLC",
                                                   output_extra_tokens=True, intermediates_only=True)
            per_block = list(zip(out["image_intermediates"], out["image_intermediates_prefix"]))
        else:
            per_block = self.trunk.forward_intermediates(media, indices=num_tokens, norm=False,
                                                         return_prefix_tokens=True, output_fmt="NLC",
                                                         intermediates_only=True)
        return self.split_prefix_tokens(per_block, self.final_norm, readout)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """PIL image -> open_clip's `(3, S, S)` (its training transform in training)."""
        return self.train_transform if train else self.test_transform

    def preprocessing_fingerprint(self) -> dict:
        return {"encoder": "open_clip", "name": self.name, "transform": repr(self.test_transform)}

    @classmethod
    def check_config(cls, cfg: EncoderConfig, key: str) -> None:
        name = cfg.name
        if not name:
            raise ConfigError(f"{key}.name: encoder type 'open_clip' needs an open_clip model: an architecture name "
                              "(ViT-L-14-336), hf-hub:ORG/REPO or local-dir:FOLDER")
        if name.startswith("local-dir:"):
            folder = Path(name.removeprefix("local-dir:")).expanduser()
            if not (folder / CONFIG_FILE).is_file():
                raise MissingFileError(f"{key}.name {name}: no {CONFIG_FILE} in {folder} (open_clip's architecture "
                                       "and preprocessing of a local-dir: model)")
            if cfg.pretrained and not any(path.suffix in WEIGHT_SUFFIXES for path in folder.iterdir()):
                # open_clip would only warn and go on with random weights
                raise MissingFileError(f"{key}.name {name}: pretrained: true but the folder holds no weight file "
                                       f"({', '.join(WEIGHT_SUFFIXES)})")
        if name.startswith(SCHEMAS):
            if cfg.checkpoint:
                raise ConfigError(f"{key}: {name} brings its own weights (pretrained: true); no checkpoint")
            return
        if cfg.pretrained:
            raise ConfigError(f"{key}: open_clip architecture '{name}' with pretrained: true: name its weights, "
                              "hf-hub:ORG/REPO (e.g. hf-hub:timm/ViT-L-16-SigLIP2-384), or give the file as checkpoint")
        known = open_clip_library().list_models()
        if name not in known:
            raise ConfigError(f"{key}.name '{name}' is not an open_clip architecture{did_you_mean(name, known)}")

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> OpenCLIPEncoder:
        cls.check_config(cfg, "encoder")
        require_own_normalization(cfg, "open_clip", "normalises as open_clip's transforms say")
        library = open_clip_library()
        weights = {"load_weights": cfg.pretrained} if cfg.name.startswith(SCHEMAS) else \
            {"pretrained": cfg.checkpoint, "load_weights": bool(cfg.checkpoint)}
        with loading("open_clip model", cfg.name):
            model, train_transform, test_transform = library.create_model_and_transforms(
                cfg.name, **weights, **cfg.model_kwargs)
        return OpenCLIPEncoder(model.visual.eval(), (train_transform, test_transform), cfg)
