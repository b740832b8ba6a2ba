"""The few-shot stages' batches and loop: training/fixed_steps.py (AdamW, warm-up then cosine, clipping at 1.0, a
fixed number of steps) with no weight decay."""
from __future__ import annotations

from collections.abc import Callable

import torch

from epalm.training.fixed_steps import train_fixed_steps


def batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> list[list[int]]:
    """`steps` batches of min(batch_size, n) indices of range(n), epoch after epoch in fresh random orders."""
    size = min(batch_size, n)
    order, cursor, out = torch.randperm(n, generator=generator), 0, []
    for _ in range(steps):
        if cursor + size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        out.append(order[cursor:cursor + size].tolist())
        cursor += size
    return out


def train_steps(groups: list[dict], loss_of_step: Callable[[int], torch.Tensor], steps: int, warmup_steps: int,
                desc: str = "training", progress: bool = False) -> list[float]:
    """groups: AdamW parameter groups (`params`, `lr`); `loss_of_step(step)` computes one step's loss.
    Returns every step's loss."""
    return train_fixed_steps([{"weight_decay": 0.0, **group} for group in groups], loss_of_step, steps, warmup_steps,
                             desc=desc, progress=progress, leave=False)
