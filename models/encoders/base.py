"""The one interface every frozen perception encoder (image, video, audio) implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from epalm.common.registry import Registry
from epalm.models.model_source import check_model_source

if TYPE_CHECKING:
    from epalm.models.encoders.config import EncoderConfig


READOUTS = ("cls", "mean")


class PerceptionEncoder(nn.Module, ABC):
    """A frozen encoder that returns one vector per each of its last K blocks: the CLS token, or the mean of
    the patch tokens (`readout`).

    Subclasses wrap a library model (timm, transformers) and never re-implement its blocks.

    Attributes set by subclasses:
        modality: "image", "video" or "audio".
        hidden_size: width of the returned tokens (d_enc).
        num_layers: number of transformer blocks; K must not exceed it.
    """

    modality: str
    hidden_size: int
    num_layers: int

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
        final norm: its CLS token (position 0; readout "cls") or the mean of its patch tokens ("mean").
        Inputs: images `(B, C, H, W)`, videos `(B, C, T, H, W)`, audio fbank `(B, frames, mel)`.
        """

    @abstractmethod
    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """The transform from one decoded media item (PIL image, list of frames, waveform) to the model input."""

    def preprocessing_fingerprint(self) -> dict:
        """Everything that changes what `preprocessing(train=False)` produces (keys the feature cache)."""
        return {}


# One discovery rule: every module under models/modalities (each modality's folder holds its encoders), and the
# modules a config's `plugins` names; a class registers itself with `@ENCODERS.register("type name")`.
ENCODERS: Registry[type[PerceptionEncoder]] = Registry("perception encoder", discover=("epalm.models.modalities",))
