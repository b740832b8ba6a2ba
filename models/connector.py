"""The linear connection: encoder CLS tokens -> LM hidden width (the only trainable bridge of eP-ALM)."""
from __future__ import annotations

import torch
from torch import nn

from models.registry import Registry


class LinearConnection(nn.ModuleList):
    """K separate `Linear(d_enc, d_lm)` (eP-ALM) or one shared by all K tokens (eP-ALM_pt-L).

    A ModuleList of the Linears, so that held as `EPALM.connector` its keys are the reference's
    (`connector.{i}.weight`, `connector.{i}.bias`).
    """

    def __init__(self, encoder_size: int, lm_size: int, num_tokens: int, shared: bool):
        super().__init__(nn.Linear(encoder_size, lm_size) for _ in range(1 if shared else num_tokens))
        self.num_tokens = num_tokens
        self.shared = shared

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(B, K, d_enc)` -> `(B, K, d_lm)`."""
        if tokens.shape[1] != self.num_tokens:
            raise ValueError(f"expected {self.num_tokens} encoder tokens, got {tokens.shape[1]}")
        if self.shared:
            return self[0](tokens)
        return torch.stack([linear(tokens[:, k]) for k, linear in enumerate(self)], dim=1)


CONNECTORS: Registry[nn.Module] = Registry("connector")


@CONNECTORS.register("linear")
def build_linear_connection(encoder_size: int, lm_size: int, num_tokens: int, shared: bool) -> LinearConnection:
    return LinearConnection(encoder_size, lm_size, num_tokens, shared)
