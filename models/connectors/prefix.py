"""The input-prefix connector (LiMBeR / linear-alignment style): one Linear (or a 2-layer MLP) maps the
encoder's features of one instance to N LM input embeddings, which stand where the media placeholder
stands in the text (after the soft prompt when the text has none)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from epalm.common.errors import ConfigError
from epalm.models.connectors.base import CONNECTORS, Connector
from epalm.models.connectors.placements import INPUT


@dataclass
class PrefixOptions:
    """tokens: N, the LM input embeddings one media instance becomes.
    hidden: None for a single Linear; a width for a 2-layer MLP (Linear, GELU, Linear)."""

    tokens: int = 2
    hidden: int | None = None

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ConfigError(f"model.connector_options.tokens must be >= 1, got {self.tokens}")
        if self.hidden is not None and self.hidden < 1:
            raise ConfigError(f"model.connector_options.hidden must be >= 1 or null, got {self.hidden}")


@CONNECTORS.register("prefix")
class PrefixConnector(Connector):
    """`(M, F, d_enc)` (F: the K encoder blocks read, or the patch tokens of readout patches) -> flattened
    `(M, F*d_enc)` -> `(M, N, d_embed)`."""

    placement = INPUT
    Options = PrefixOptions

    def __init__(self, encoder_size: int, num_features: int, embed_size: int, tokens: int, hidden: int | None):
        super().__init__()
        self.num_features, self.embed_size, self.tokens_per_instance = num_features, embed_size, tokens
        width_in, width_out = encoder_size * num_features, embed_size * tokens
        if hidden is None:
            self.proj = nn.Linear(width_in, width_out)
        else:
            self.proj = nn.Sequential(nn.Linear(width_in, hidden), nn.GELU(), nn.Linear(hidden, width_out))

    @classmethod
    def from_config(cls, cfg, options: PrefixOptions, encoder_width: int, lm, num_features: int) -> PrefixConnector:
        return cls(encoder_width, num_features, lm.embedding_size, options.tokens, options.hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} encoder feature vectors, got {features.shape[1]}")
        out = self.proj(features.flatten(1))
        return out.view(features.shape[0], self.tokens_per_instance, self.embed_size)
