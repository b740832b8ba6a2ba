"""The optimisation loop of every fixed-length training outside the trainer (the demo models' pretraining, the
few-shot study's stages): AdamW, linear warm-up then cosine decay (transformers' schedule, as the trainer's),
gradient clipping, a fixed number of steps, a loss per step returned. The trainer (training/trainer.py) has its own
loop because accelerate drives it (processes, mixed precision, accumulation, checkpoints)."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup


def train_fixed_steps(groups: list[dict], loss_of_step: Callable[[int], torch.Tensor], steps: int, warmup_steps: int,
                      *, clip_parameters: Iterable[torch.nn.Parameter] | None = None, max_grad_norm: float = 1.0,
                      betas: tuple[float, float] = (0.9, 0.999), desc: str = "training", progress: bool = False,
                      leave: bool = True) -> list[float]:
    """groups: AdamW parameter groups, each with its `params`, `lr` and `weight_decay`; `loss_of_step(step)`
    computes one step's loss. The gradient norm is clipped over `clip_parameters` (default: every parameter of the
    groups, in their order; the order decides the float sum of the norms). Returns every step's loss."""
    groups = [group for group in groups if group["params"]]
    parameters = list(clip_parameters) if clip_parameters is not None else [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, betas=betas)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(warmup_steps, max(steps - 1, 0)), steps)
    losses = []
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=leave)
    for step in bar:
        loss = loss_of_step(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses
