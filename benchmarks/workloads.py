"""What one timed repetition does: a training step (forward, backward, AdamW) or one batched generation.

Inputs are synthetic tensors of the shape's sizes (random token ids, random pixels), so the model alone is
timed; `benchmarks/pipeline.py` adds the data pipeline.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from epalm.models.epalm import EPALM
from epalm.training.loss import training_loss
from epalm.training.optim import build_optimizer
from epalm.training.run_config import TrainConfig


@dataclass
class Inputs:
    input_ids: torch.Tensor  # (B, T), BOS first, no padding
    attention_mask: torch.Tensor
    media: torch.Tensor  # (B, 3, S, S)
    features: torch.Tensor  # (B, K, d_enc): the encoder's output for `media`, as the feature cache holds it


def synthetic_inputs(model: EPALM, batch: int, text_len: int, device: torch.device, seed: int = 0) -> Inputs:
    if "image" not in model.encoders or not hasattr(model.encoders["image"], "image_size"):
        raise ValueError("the benchmark measures image models: the shape needs an image encoder")
    generator = torch.Generator().manual_seed(seed)
    config = model.lm.model.config
    ids = torch.randint(3, config.vocab_size, (batch, text_len), generator=generator)
    ids[:, 0] = config.bos_token_id
    size = model.encoders["image"].image_size
    media = torch.randn(batch, 3, size, size, generator=generator)
    ids, media = ids.to(device), media.to(device)
    with torch.no_grad():
        features = model.encode(media).float()
    return Inputs(ids, torch.ones_like(ids), media, features)


ANSWER_TOKENS = 5


def training_labels(input_ids: torch.Tensor, loss_tokens: str) -> torch.Tensor:
    """The labels of the timed training step: every token, or only the last ANSWER_TOKENS (-100 elsewhere)."""
    if loss_tokens == "all":
        return input_ids
    if loss_tokens != "answer":
        raise ValueError(f"loss_tokens must be 'answer' or 'all', got {loss_tokens!r}")
    labels = input_ids.clone()
    labels[:, : -ANSWER_TOKENS] = -100
    return labels


def autocast_for(device: torch.device, dtype: torch.dtype) -> Callable[[], contextlib.AbstractContextManager]:
    """Mixed precision as accelerate applies it in training (none in fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def make_optimizer(model: EPALM, fused_adamw: str | bool = "auto", **adamw_options) -> torch.optim.Optimizer:
    """The trainer's AdamW (`train.fused_adamw` as given: fused on a GPU by default); `adamw_options` (foreach,
    fused) set on its groups afterwards, for the speed experiments."""
    optimizer = build_optimizer(model, TrainConfig(fused_adamw=fused_adamw))
    for key, value in adamw_options.items():
        for group in optimizer.param_groups:
            group[key] = value
    return optimizer


def training_step(
    model: EPALM,
    optimizer: torch.optim.Optimizer,
    inputs: Inputs,
    cached: bool,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    loss_tokens: str = "answer",
) -> Callable[[], float]:
    """One optimizer step as the trainer takes it: from media (encoder run) or from cached features.

    loss_tokens: `answer` (the trainer's default: the last ANSWER_TOKENS tokens, a VQA answer and its EOS) or
    `all` (every token, as the reference's loss)."""
    model.train()

    labels = training_labels(inputs.input_ids, loss_tokens)

    def step() -> float:
        with autocast():
            loss = training_loss(model, inputs.input_ids, inputs.attention_mask, labels,
                                 media=None if cached else inputs.media, features=inputs.features if cached else None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def generation(
    model: EPALM,
    inputs: Inputs,
    new_tokens: int,
    num_beams: int,
    use_cache: bool,
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Callable[[], torch.Tensor]:
    """Beam search from the images (encoder included, as evaluation runs it) for exactly `new_tokens`
    tokens (`min_new_tokens` keeps every beam going, so all modes produce equal lengths). `context`: a
    context manager around the call (the speed experiments' inference_mode or autocast)."""
    model.eval()

    def run() -> torch.Tensor:
        with context():
            return model.generate(
                inputs.input_ids, inputs.attention_mask, media=inputs.media, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, num_beams=num_beams, use_cache=use_cache,
            )

    return run


def encoding(
    model: EPALM, inputs: Inputs, autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
) -> Callable[[], torch.Tensor]:
    """The frozen encoder alone, as a training step runs it (what the feature cache saves per step)."""

    @torch.no_grad()
    def run() -> torch.Tensor:
        with autocast():
            return model.encode(inputs.media)

    return run
