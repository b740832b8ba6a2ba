"""A test-only modality plugin, in one file outside models/modalities: `model.plugins: [tests.toy_modality]`.

A "toy" is a `.npy` vector of 8 numbers; its encoder is a stack of small Linear blocks whose outputs are
read as the encoder's per-block tokens. Nothing else in the repository knows about it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from epalm.common.errors import MediaDecodeError
from epalm.models.encoders.base import ENCODERS, PerceptionEncoder
from epalm.models.encoders.config import EncoderConfig
from epalm.models.modalities import Modality, register_modality

TOY_WIDTH = 8


@register_modality
class ToyModality(Modality):
    name, placeholder, data_key = "toy", "<toy>", "toys"

    def decode(self, path: str, train: bool, rng, encoder_cfg) -> Any:
        try:
            vector = np.load(path)
        except (OSError, ValueError) as error:
            raise MediaDecodeError(path, f"not a .npy toy ({error})") from error
        if vector.shape != (TOY_WIDTH,):
            raise MediaDecodeError(path, f"a toy has {TOY_WIDTH} numbers, got shape {vector.shape}")
        return vector


@ENCODERS.register("toy_mlp")
class ToyEncoder(PerceptionEncoder):
    modality = "toy"

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.name, self.hidden_size, self.num_layers = "toy-mlp", width, depth
        self.inp = nn.Linear(TOY_WIDTH, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth))

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        hidden, outputs = self.inp(media), []
        for block in self.blocks:
            hidden = block(hidden)
            outputs.append(hidden)
        return torch.stack(outputs[-num_tokens:], dim=1)

    def preprocessing(self, train: bool):
        return ToyTransform()

    def preprocessing_fingerprint(self) -> dict:
        return {"encoder": "toy"}

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> ToyEncoder:
        with torch.random.fork_rng(devices=[]):  # a frozen random encoder, the same at every rebuild
            torch.manual_seed(0)
            return cls(width=int(cfg.model_kwargs.get("width", 16)), depth=int(cfg.model_kwargs.get("depth", 3)))


class ToyTransform:
    def __call__(self, vector: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(vector, dtype=torch.float32)


