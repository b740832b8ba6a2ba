"""Small MLP probes with a fixed budget, scored on held-out items by k-fold cross-validation.

Each item is predicted once, by the probe trained on the other folds; the folds are stratified by label and
fixed by the seed, so every representation probed for one attribute sees exactly the same splits. Features
are standardised per dimension with the training folds' mean and standard deviation, so a representation's
overall scale (which a connector may change) does not change what the probe can learn in its budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.user_errors import ConfigError


@dataclass(frozen=True)
class ProbeBudget:
    """steps: full-batch AdamW steps per probe; width: the hidden layer (Linear, ReLU, Linear);
    folds: k of the cross-validation; seed: the folds and the probes' initialisation."""

    steps: int = 300
    width: int = 64
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


def _standardised(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0, unbiased=False).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def train_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, budget: ProbeBudget,
                seed: int) -> nn.Module:
    """An MLP fitted to `(N, D)` float features and `(N,)` class indices, full batch."""
    with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG state untouched
        torch.manual_seed(seed)
        probe = nn.Sequential(nn.Linear(features.shape[1], budget.width), nn.ReLU(),
                              nn.Linear(budget.width, num_classes))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    for _ in range(budget.steps):
        loss = nn.functional.cross_entropy(probe(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe.eval()


def cross_validated_accuracy(features: torch.Tensor, labels: torch.Tensor, budget: ProbeBudget) -> ProbeScore:
    """Held-out accuracy of MLP probes on `(N, D)` features for `(N,)` integer labels."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")
    features = features.float()
    num_classes = int(labels.max()) + 1
    fold = stratified_folds(labels, budget.folds, budget.seed)
    correct = torch.zeros(len(labels), dtype=torch.bool)
    fold_accuracies = []
    for k in range(budget.folds):
        test = fold == k
        if not test.any():
            continue
        train_x, test_x = _standardised(features[~test], features[test])
        probe = train_probe(train_x, labels[~test], num_classes, budget, budget.seed + k)
        with torch.no_grad():
            correct[test] = probe(test_x).argmax(1) == labels[test]
        fold_accuracies.append(correct[test].float().mean().item())
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
