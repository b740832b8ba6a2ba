"""The projector shared by every modality: common-width features -> N LM input embeddings.

Two layers (Linear, GELU, Linear) whose first layer takes a modality's low-rank adapter. Its outputs are what
the input-prefix connector would produce, `(M, N, d_embed)`, and go to the LM as `tokens=` (models/epalm.py).
"""
from __future__ import annotations

import torch
from torch import nn

from epalm.models.fewshot.low_rank_adapter import LowRankAdapter


class SharedProjector(nn.Module):
    def __init__(self, width: int, hidden: int, tokens: int, embed_size: int):
        super().__init__()
        self.width, self.hidden, self.tokens, self.embed_size = width, hidden, tokens, embed_size
        self.first = nn.Linear(width, hidden)
        self.second = nn.Linear(hidden, tokens * embed_size)

    def forward(self, features: torch.Tensor, adapter: LowRankAdapter | None = None) -> torch.Tensor:
        """features: `(M, width)` common-width features -> `(M, tokens, embed_size)`."""
        hidden = self.first(features)
        if adapter is not None:
            hidden = hidden + adapter.delta(features)
        out = self.second(nn.functional.gelu(hidden))
        return out.view(features.shape[0], self.tokens, self.embed_size)
