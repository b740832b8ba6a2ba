"""The one interface every frozen perception encoder (image, video, audio) implements."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from epalm.common.errors import ConfigError
from epalm.common.registry import Registry
from epalm.models.encoders.readouts import READOUTS, VECTOR_READOUTS, pool_patch_tokens
from epalm.models.model_source import check_model_source

if TYPE_CHECKING:
    from epalm.models.encoders.config import EncoderConfig


__all__ = ["ENCODERS", "READOUTS", "PerceptionEncoder", "require_own_normalization"]


def require_own_normalization(cfg: EncoderConfig, type_name: str, how: str) -> None:
    """An encoder whose library (or its own statistics) fixes the input normalisation takes only `normalization:
    encoder`; `how` says what normalises instead ("normalises as its processor says")."""
    if cfg.normalization != "encoder":
        raise ConfigError(f"encoder type '{type_name}' {how}: use normalization: encoder")


class PerceptionEncoder(nn.Module, ABC):
    """A frozen encoder that returns one vector per each of its last K blocks (the CLS token, or the mean of
    the patch tokens), or the patch tokens of one block (`readout`: models/encoders/readouts.py).

    Subclasses wrap a library model (timm, transformers, open_clip) and never re-implement its blocks.

    Attributes set by subclasses:
        modality: "image", "video" or "audio".
        hidden_size: width of the returned tokens (d_enc).
        num_layers: number of blocks (transformer blocks, a CNN's stages); K must not exceed it.
        readouts: the readouts it gives (class attribute; without a CLS token, no "cls").
        patch_layout: the grid of one instance's patch tokens (readout "patches"), e.g. (rows, columns)
            (`patch_grid(K)` where it depends on the block read).
    """

    modality: str
    hidden_size: int
    num_layers: int
    readouts: tuple[str, ...] = VECTOR_READOUTS
    patch_layout: tuple[int, ...] | None = None

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: EncoderConfig) -> PerceptionEncoder:
        """Build (and load the weights `cfg` names) from an encoder config section."""

    @classmethod
    def check_config(cls, cfg: EncoderConfig, key: str) -> None:
        """Cheap checks before anything is loaded (a run's preflight; `key` names the section in messages):
        by default, a `name` that is a local path must be there. An encoder adds what it can check cheaply."""
        check_model_source(f"{key}.name", cfg.name)

    @abstractmethod
    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        """Encode a batch and return `(B, num_tokens, hidden_size)`.

        Token k is read from the output of block `num_layers - num_tokens + k`, passed through the encoder's
        final norm: its CLS token (position 0; readout "cls") or the mean of its patch tokens ("mean"). Readout
        "patches": `(B, N, hidden_size)`, the patch tokens of block `num_layers - num_tokens` as the library
        returns them. Inputs: what `preprocessing` makes of one item, batched (images `(B, C, H, W)`, videos
        `(B, C, T, H, W)`, audio fbank `(B, frames, mel)` ...).
        """

    def pooled(self, tokens: torch.Tensor, num_tokens: int, readout: str, patch_tokens: int | None) -> torch.Tensor:
        """`forward`'s output as a model's connector receives it: patch tokens pooled to `patch_tokens` when given.
        (A step after the call, not a second entry point: the model calls the module itself, which an engine's
        wrapper such as FSDP needs to gather the weights.)"""
        if readout == "patches" and patch_tokens is not None:
            return pool_patch_tokens(tokens, self.patch_grid(num_tokens), patch_tokens)
        return tokens

    def patch_grid(self, num_tokens: int) -> tuple[int, ...] | None:
        """The layout of block -K's patch tokens: `patch_layout`, unless the grid shrinks from block to block (a
        CNN's stages, CLAP's Swin stages), where the encoder says."""
        return self.patch_layout

    def features_per_instance(self, readout: str, num_tokens: int, patch_tokens: int | None = None) -> int:
        """Vectors per instance after `pooled`: K of a vector readout, the (pooled) patch tokens of "patches"."""
        if readout != "patches":
            return num_tokens
        if patch_tokens is not None:
            return patch_tokens
        grid = self.patch_grid(num_tokens)
        if grid is None:
            raise ValueError(f"encoder '{type(self).__name__}' has no patch layout")
        return math.prod(grid)

    @abstractmethod
    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """The transform from one decoded media item (PIL image, list of frames, waveform) to the model input."""

    def preprocessing_fingerprint(self) -> dict:
        """Everything that changes what `preprocessing(train=False)` produces (keys the feature cache)."""
        return {}


# One discovery rule: every module under models/modalities (each modality's folder holds its encoders), and the
# modules a config's `plugins` names; a class registers itself with `@ENCODERS.register("type name")`.
ENCODERS: Registry[type[PerceptionEncoder]] = Registry("perception encoder", discover=("epalm.models.modalities",))
