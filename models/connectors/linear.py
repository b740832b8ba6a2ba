"""eP-ALM's linear connection: the CLS tokens of the last K encoder blocks -> K visual tokens, each
injected at its share of the injection layers (the only trainable bridge of eP-ALM)."""
from __future__ import annotations

import torch
from torch import nn

from epalm.common.errors import ConfigError
from epalm.models.connectors.base import CONNECTORS, Connector
from epalm.models.connectors.placements import LAYERS


@CONNECTORS.register("linear")
class LinearConnection(nn.ModuleList, Connector):
    """K separate `Linear(d_enc, d_lm)` (eP-ALM) or one shared by all K tokens (eP-ALM_pt-L).

    A ModuleList of the Linears, so that held as `EPALM.connectors[modality]` its keys are the reference's
    `connector.{i}.weight` / `.bias` with the modality in between (`connectors.image.{i}.weight`; models/checkpoint.py
    maps a reference file's keys).
    """

    placement = LAYERS
    tokens_per_instance = 1

    def __init__(self, encoder_size: int, lm_size: int, num_tokens: int, shared: bool):
        super().__init__(nn.Linear(encoder_size, lm_size) for _ in range(1 if shared else num_tokens))
        self.num_tokens = num_tokens
        self.shared = shared

    @classmethod
    def from_config(cls, cfg, options, encoder_width: int, lm, num_features: int) -> LinearConnection:
        if cfg.readout == "patches":
            raise ConfigError("model.connector 'linear' injects one vector per encoder block (model.readout cls or "
                              "mean); readout 'patches' gives a sequence: use model.connector mlp (or prefix)")
        return cls(encoder_width, lm.hidden_size, cfg.injected_hidden_states, cfg.shared_connector)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(M, K, d_enc)` -> `(M, K, d_lm)`."""
        if tokens.shape[1] != self.num_tokens:
            raise ValueError(f"expected {self.num_tokens} encoder tokens, got {tokens.shape[1]}")
        if self.shared:
            return self[0](tokens)
        return torch.stack([linear(tokens[:, k]) for k, linear in enumerate(self)], dim=1)
