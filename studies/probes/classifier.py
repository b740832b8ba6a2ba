"""Small MLP probes with a fixed budget, scored on held-out items by k-fold cross-validation.

Each item is predicted once, by the probe trained on the other folds; the folds are stratified by label and
fixed by the seed, so every representation probed for one attribute sees exactly the same splits. The k probes
of one cross-validation train together, as one batched model (FoldProbes), which is several times faster on a CPU
than k small models one after the other. Features
are standardised per dimension with the training folds' mean and standard deviation, so a representation's
overall scale (which a connector may change) does not change what the probe can learn in its budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from epalm.common.errors import ConfigError


@dataclass(frozen=True)
class ProbeBudget:
    """steps: full-batch AdamW steps per probe; width: the hidden layer (Linear, ReLU, Linear);
    folds: k of the cross-validation; seed: the folds and the probes' initialisation."""

    steps: int = 200
    width: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"probe {name} must be >= 1, got {getattr(self, name)}")
        if self.folds < 2:
            raise ConfigError(f"probe folds must be >= 2 (held-out items are needed), got {self.folds}")
        if self.lr <= 0:
            raise ConfigError(f"probe lr must be > 0, got {self.lr}")


@dataclass
class ProbeScore:
    accuracy: float  # over every item, each predicted by the probe that did not train on it
    fold_accuracies: list[float]


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Fold index of each item: within each class, a seeded shuffle dealt round-robin over the folds."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    fold = torch.empty(len(labels), dtype=torch.long)
    offset = 0
    for value in torch.unique(labels):
        members = order[labels[order] == value]
        fold[members] = (torch.arange(len(members)) + offset) % folds
        offset += len(members)  # the next class continues the deal, so small classes do not all start at fold 0
    return fold


class FoldProbes(nn.Module):
    """k independent MLPs (Linear, ReLU, Linear), one per fold, held as batched weights so that one step trains
    all of them: the loss is their sum and AdamW acts elementwise, so each learns exactly as it would alone."""

    def __init__(self, folds: int, width_in: int, width: int, num_classes: int, generator: torch.Generator):
        super().__init__()

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:  # nn.Linear's default initialisation
            bound = fan_in ** -0.5
            return nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) * bound)

        self.w1, self.b1 = uniform(folds, width_in, width, fan_in=width_in), uniform(folds, 1, width, fan_in=width_in)
        self.w2, self.b2 = uniform(folds, width, num_classes, fan_in=width), uniform(folds, 1, num_classes,
                                                                                    fan_in=width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(k, N, D)` -> logits `(k, N, C)`: probe i reads its own copy of the features."""
        return torch.relu(features @ self.w1 + self.b1) @ self.w2 + self.b2


def _standardised_per_fold(features: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """`(N, D)` features and a `(k, N)` training mask -> `(k, N, D)`, each copy standardised with the mean and
    standard deviation of its fold's training items."""
    weights = train.float() / train.float().sum(1, keepdim=True)
    mean = weights @ features  # (k, D)
    variance = weights @ features.square() - mean.square()
    std = variance.clamp_min(0).sqrt().clamp_min(1e-6)
    return (features.unsqueeze(0) - mean.unsqueeze(1)) / std.unsqueeze(1)


def cross_validated_accuracy(features: torch.Tensor, labels: torch.Tensor, budget: ProbeBudget) -> ProbeScore:
    """Held-out accuracy of MLP probes on `(N, D)` features for `(N,)` integer labels."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")
    fold = stratified_folds(labels, budget.folds, budget.seed)
    folds = torch.arange(budget.folds)[torch.bincount(fold, minlength=budget.folds) > 0]
    train = fold.unsqueeze(0) != folds.unsqueeze(1)  # (k, N): the items each probe learns from
    inputs = _standardised_per_fold(features.float(), train)
    num_classes = int(labels.max()) + 1
    probes = FoldProbes(len(folds), features.shape[1], budget.width, num_classes,
                        torch.Generator().manual_seed(budget.seed))
    optimizer = torch.optim.AdamW(probes.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    targets = labels.expand(len(folds), -1)
    share = train.float() / train.float().sum(1, keepdim=True)  # each probe's loss: the mean over its own items
    for _ in range(budget.steps):
        losses = nn.functional.cross_entropy(probes(inputs).transpose(1, 2), targets, reduction="none")
        loss = (losses * share).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        right = probes(inputs).argmax(2) == targets  # (k, N)
    held_out = ~train
    correct = (right & held_out).any(0)  # each item is held out by exactly one probe
    fold_accuracies = [right[i][held_out[i]].float().mean().item() for i in range(len(folds))]
    return ProbeScore(correct.float().mean().item(), fold_accuracies)


def majority_accuracy(labels: torch.Tensor, budget: ProbeBudget) -> float:
    """Held-out accuracy of always answering the training folds' most frequent label (same folds as the probes)."""
    fold = stratified_folds(labels, budget.folds, budget.seed)
    correct = torch.zeros(len(labels), dtype=torch.bool)
    for k in range(budget.folds):
        test = fold == k
        if test.any():
            correct[test] = labels[test] == torch.mode(labels[~test]).values
    return correct.float().mean().item()
