"""The demo encoders' pretraining loop: one linear head per attribute on the final CLS (as eP-ALM reads it),
summed cross-entropy, AdamW on a warm-up + cosine schedule, a fixed number of steps (training/fixed_steps.py). The ViT, the TimeSformer and
the AST all train through `pretrain_heads`; each brings its own batch maker (augmentation) and parameter groups.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from epalm.models.encoders import PerceptionEncoder
from epalm.training.fixed_steps import train_fixed_steps

Labels = dict[str, torch.Tensor]
# (inputs, labels, generator) -> the batch the network trains on (augmentation), labels changed to match.
BatchMaker = Callable[[torch.Tensor, Labels, torch.Generator], tuple[torch.Tensor, Labels]]


@dataclass(frozen=True)
class HeadTraining:
    """AdamW on the summed (weighted) cross-entropy of one linear head per attribute, for a fixed number of steps."""

    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.05
    loss_weights: dict[str, float] = field(default_factory=dict)  # attribute -> weight (default 1)


class AttributeHeads(nn.Module):
    """One linear classifier per attribute on a CLS token (discarded after pretraining)."""

    def __init__(self, width: int, classes: dict[str, list[str]]):
        super().__init__()
        self.heads = nn.ModuleDict({attribute: nn.Linear(width, len(values)) for attribute, values in classes.items()})

    def forward(self, cls: torch.Tensor) -> dict[str, torch.Tensor]:
        return {attribute: head(cls) for attribute, head in self.heads.items()}


def pretrain_heads(encoder: PerceptionEncoder, heads: AttributeHeads, inputs: torch.Tensor, labels: Labels,
                   recipe: HeadTraining, seed: int, make_batch: BatchMaker, desc: str, progress: bool = True,
                   param_groups: Iterable | None = None) -> list[float]:
    """`recipe.steps` AdamW steps on the final CLS; returns the loss of every step. `inputs` (N, ...) and `labels`
    (attribute -> (N,)) are the training pool; `param_groups` (default: every parameter of the network and the heads,
    `recipe.weight_decay` on all) for a per-parameter weight decay."""
    network = getattr(encoder, "model", encoder)  # the wrapped library model, or an encoder that is its own network
    network.requires_grad_(True)
    network.train()
    parameters = [*network.parameters(), *heads.parameters()]
    if param_groups is None:
        groups = [{"params": parameters, "lr": recipe.lr, "weight_decay": recipe.weight_decay}]
    else:  # AdamW's own default decay (0.01) where a group names none
        groups = [{"lr": recipe.lr, "weight_decay": 0.01, **group} for group in param_groups]
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(len(inputs), generator=generator), 0

    def loss_of_step(step: int) -> torch.Tensor:
        nonlocal order, cursor
        if cursor + recipe.batch_size > len(order):  # a new epoch, in a new order
            order, cursor = torch.randperm(len(inputs), generator=generator), 0
        index = order[cursor:cursor + recipe.batch_size]
        cursor += recipe.batch_size
        batch, batch_labels = make_batch(inputs[index], {a: v[index] for a, v in labels.items()}, generator)
        logits = heads(encoder(batch, 1)[:, 0])
        return sum(recipe.loss_weights.get(a, 1.0) * nn.functional.cross_entropy(logits[a], batch_labels[a])
                   for a in logits)

    losses = train_fixed_steps(groups, loss_of_step, recipe.steps, recipe.warmup_steps, clip_parameters=parameters,
                               desc=desc, progress=progress)
    network.requires_grad_(False)
    network.eval()
    return losses
