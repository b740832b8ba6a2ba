"""The language-modelling loss on text positions whose label is not -100."""
from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("token_mean", "sample_sum")


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "token_mean", weight: float = 1.0) -> torch.Tensor:
    """Next-token cross-entropy: logits at position t predict labels at t + 1.

    token_mean: mean over every supervised token of the batch.
    sample_sum: the reference's: each sample's token losses summed, averaged over the batch.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss_reduction '{reduction}' is not one of {REDUCTIONS}")
    targets = labels[:, 1:]
    per_token = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).view(targets.shape)
    if reduction == "token_mean":
        loss = per_token.sum() / (targets != -100).sum().clamp_min(1)
    else:
        loss = per_token.sum(dim=1).mean()
    return loss * weight
