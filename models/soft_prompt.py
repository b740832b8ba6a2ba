"""Prompt tuning: P learned input vectors placed before BOS (plain, or MLP-reparameterised)."""
from __future__ import annotations

import torch
from torch import nn


class SoftPrompt(nn.Module):
    """`prompt_len` vectors of the LM's input-embedding width.

    Plain: `Embedding(P, d)`. With `mlp`: `Embedding(P, d) -> Linear(d, d) -> Tanh -> Linear(d, d)`.
    Held in `self.prefix_embedding` (a Sequential) so the keys match the reference's
    `prompt_module.prefix_embedding.{0,1,3}.*`.
    """

    def __init__(self, prompt_len: int, width: int, mlp: bool, init: torch.Tensor | None = None):
        super().__init__()
        self.prompt_len = prompt_len
        layers: list[nn.Module] = [nn.Embedding(prompt_len, width)]
        if mlp:
            layers += [nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width)]
        self.prefix_embedding = nn.Sequential(*layers)
        if init is not None:
            with torch.no_grad():
                self.prefix_embedding[0].weight.copy_(init)

    @property
    def mlp(self) -> bool:
        return len(self.prefix_embedding) > 1

    def forward(self) -> torch.Tensor:
        """`(P, d)`: the same prompt for every sample."""
        positions = torch.arange(self.prompt_len, device=self.prefix_embedding[0].weight.device)
        return self.prefix_embedding(positions)
