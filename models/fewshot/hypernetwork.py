"""The hypernetwork: k samples of a modality -> the low-rank adapter of that modality on the shared projector.

down = gain * readout (the set's feature -> caption-code map, see set_encoder.py); up = a learned base (the
codes' way into the projector's hidden layer), gated per rank by the set summary; bias = up @ mean_code plus a
summary term. One forward pass per modality; the adapter keeps the graph, so the caption loss of queries trains
the hypernetwork (and, jointly, the projector).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from epalm.models.fewshot.low_rank_adapter import LowRankAdapter
from epalm.models.fewshot.set_encoder import SetEncoder


class HyperNetwork(nn.Module):
    def __init__(self, width: int, hidden: int, caption_width: int, rank: int, summary_width: int = 64,
                 pooling: str = "mean", solver: str = "ridge"):
        super().__init__()
        self.width, self.hidden, self.rank = width, hidden, rank
        self.set_encoder = SetEncoder(width, caption_width, rank, summary_width, pooling, solver)
        self.gain = nn.Parameter(torch.ones(rank))
        self.up_base = nn.Parameter(torch.randn(hidden, rank) / math.sqrt(rank))
        self.up_gate = nn.Linear(summary_width, rank)
        self.bias_head = nn.Linear(summary_width, hidden)
        for head in (self.up_gate, self.bias_head):  # the generated adapter starts as the set-independent one
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, features: torch.Tensor, captions: torch.Tensor | None = None) -> LowRankAdapter:
        """features: (k, width) common-width support features; captions: (k, caption_width) embeddings or None."""
        summary = self.set_encoder(features, captions)
        down = self.gain[:, None] * summary.readout
        up = self.up_base * (1 + self.up_gate(summary.summary))
        bias = up @ summary.mean_code + self.bias_head(summary.summary)
        return LowRankAdapter(down, up, bias)
