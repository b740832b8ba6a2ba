"""The language-modelling loss on text positions whose label is not -100."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from epalm.common.errors import check_choice

REDUCTIONS = ("token_mean", "sample_sum")


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """The text positions t whose next token (t + 1) is supervised in some sample of the batch: the only
    positions whose logits the loss reads. With the answer-only loss they are a few per batch, so the LM head
    (vocabulary x hidden, the largest matmul of a small LM) runs on those alone."""
    return (labels[:, 1:] != -100).any(0).nonzero().squeeze(1)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "token_mean", weight: float = 1.0,
            positions: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy: logits at position t predict labels at t + 1.

    logits: `(B, T, V)` for every text position, or `(B, len(positions), V)` for `positions` only.
    token_mean: mean over every supervised token of the batch.
    sample_sum: the reference's: each sample's token losses summed, averaged over the batch.
    """
    check_choice("train.loss_reduction", reduction, REDUCTIONS)
    if positions is None:
        targets, logits = labels[:, 1:], logits[:, :-1]
    else:
        targets = labels[:, positions + 1]
    per_token = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).view(targets.shape)
    if reduction == "token_mean":
        loss = per_token.sum() / (targets != -100).sum().clamp_min(1)
    else:
        loss = per_token.sum(dim=1).mean()
    return loss * weight


def training_loss(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                  media=None, features=None, reduction: str = "token_mean", weight: float = 1.0,
                  media_index: torch.Tensor | None = None) -> torch.Tensor:
    """The trainer's loss of one batch (the benchmarks time this same call): the eP-ALM forward with the LM head
    only at `predicting_positions(labels)`, then `lm_loss` there."""
    positions = predicting_positions(labels)
    out = model(input_ids, attention_mask, media=media, features=features, logit_positions=positions,
                media_index=media_index)
    return lm_loss(out.logits, labels, reduction, weight, positions)
