"""The one training loop every few-shot method and stage uses: AdamW, linear warm-up then cosine decay
(transformers' schedule, as the trainer's), gradient clipping at 1.0, a fixed number of steps."""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup


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
                desc: str = "training", progress: bool = False, weight_decay: float = 0.0) -> list[float]:
    """groups: AdamW parameter groups (`params`, `lr`); `loss_of_step(step)` computes one step's loss.
    Returns every step's loss."""
    groups = [{"weight_decay": weight_decay, **group} for group in groups if group["params"]]
    parameters = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(warmup_steps, max(steps - 1, 0)), steps)
    losses = []
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False)
    for step in bar:
        loss = loss_of_step(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses
