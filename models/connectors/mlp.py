"""LLaVA-1.5's projector: a GELU MLP (Linear, GELU, Linear) maps each feature vector of an instance, usually each
of the encoder's patch tokens (`model.readout: patches`), to one LM input embedding; the N embeddings stand where the
media placeholder stands in the text (after the soft prompt when the text has none). With `tokens: N` it maps one
feature vector (a pooled embedding) to N embeddings with N MLPs instead, as multi_token's vector projector does."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from epalm.common.errors import ConfigError
from epalm.models.connectors.base import CONNECTORS, Connector
from epalm.models.connectors.placements import INPUT


@dataclass
class ProjectorOptions:
    """layers: the MLP's Linear layers, a GELU between two: 2 = LLaVA-1.5's `mlp2x_gelu`, 1 = one Linear (LLaVA-1);
        every hidden width is the LM's input-embedding width, as LLaVA's and multi_token's.
    tokens: none = one LM input embedding per feature vector (each patch token, or each of the K vectors read),
        one MLP shared by all (LLaVA's projector over patch tokens); N = N embeddings from the one vector an
        instance gives (readout cls or mean with K = 1), N separate MLPs (multi_token's vector projector)."""

    layers: int = 2
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ConfigError(f"model.connector_options.layers must be >= 1, got {self.layers}")
        if self.tokens is not None and self.tokens < 1:
            raise ConfigError(f"model.connector_options.tokens must be >= 1 or null, got {self.tokens}")


def gelu_mlp(width_in: int, width: int, layers: int) -> nn.Sequential:
    """Linear(width_in, width), then (GELU, Linear(width, width)) `layers - 1` times: LLaVA's `mlp{n}x_gelu`."""
    modules: list[nn.Module] = [nn.Linear(width_in, width)]
    for _ in range(layers - 1):
        modules += [nn.GELU(), nn.Linear(width, width)]
    return nn.Sequential(*modules)


@CONNECTORS.register("mlp")
class GeluProjector(Connector):
    """`(M, F, d_enc)` -> `(M, F, d_embed)` (one MLP applied to each of the F vectors), or, with `tokens: N`,
    `(M, 1, d_enc)` -> `(M, N, d_embed)` (N MLPs). Checkpoint keys: `connectors.<modality>.mlp.{0,2}.*`, or
    `connectors.<modality>.mlps.{i}.{0,2}.*` with `tokens`."""

    placement = INPUT
    Options = ProjectorOptions

    def __init__(self, encoder_size: int, num_features: int, embed_size: int, layers: int, tokens: int | None):
        super().__init__()
        self.num_features, self.embed_size = num_features, embed_size
        if tokens is None:
            self.tokens_per_instance = num_features
            self.mlp = gelu_mlp(encoder_size, embed_size, layers)
        else:
            if num_features != 1:
                raise ConfigError(f"model.connector_options.tokens={tokens} maps ONE feature vector per instance to "
                                  f"{tokens} embeddings; the encoder gives {num_features} (set "
                                  "model.injected_hidden_states=1 with readout cls or mean, or tokens: null)")
            self.tokens_per_instance = tokens
            self.mlps = nn.ModuleList(gelu_mlp(encoder_size, embed_size, layers) for _ in range(tokens))

    @classmethod
    def from_config(cls, cfg, options: ProjectorOptions, encoder_width: int, lm, num_features: int) -> GeluProjector:
        return cls(encoder_width, num_features, lm.embedding_size, options.layers, options.tokens)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} encoder feature vectors per instance, got "
                             f"{features.shape[1]}")
        if hasattr(self, "mlp"):
            return self.mlp(features)
        return torch.cat([mlp(features) for mlp in self.mlps], dim=1)
