"""The few-shot methods: given k (feature, caption) pairs of the new modality, caption the evaluation items.

Every method gets the same k pairs and, when it trains, the same steps, batch size and batch order (drawn from
the run's seed). The projector methods normalise features by the k samples' statistics and map them to the
common width; the eP-ALM baseline reads the raw features, as the trainer would.

- hypernetwork: the adapter generated from the k pairs in one forward pass (no training);
- hypernetwork_finetuned: that adapter, then trained on the k pairs (the projector frozen);
- scratch: a new projector trained on the k pairs;
- pretrained_finetuned: the stage-1 projector, every weight trained on the k pairs;
- lora: the stage-1 projector frozen, a low-rank adapter of the same shapes trained (LoRA: up and bias start at 0);
- epalm_injection: eP-ALM (a linear connection per encoder block injected into the LM layers, a soft prompt),
  from scratch;
- blind (reference): a new projector trained on zero features (what the LM says without the media).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from epalm.models.encoders import EncoderConfig
from epalm.models.fewshot.common_width import FeatureStatistics
from epalm.models.fewshot.hypernetwork import HyperNetwork
from epalm.models.fewshot.low_rank_adapter import TrainableAdapter
from epalm.models.fewshot.projector import SharedProjector
from epalm.studies.fewshot.bridge import Bridge
from epalm.studies.fewshot.caption_lm import CaptionLM, injection_model
from epalm.studies.fewshot.config import FewShotConfig
from epalm.studies.fewshot.optimisation import batches, train_steps
from epalm.studies.fewshot.pretrain_projector import new_projector
from epalm.studies.fewshot.sources import Draw

WARMUP_FRACTION = 0.1


@dataclass
class Shots:
    """The k pairs: encoder features of every cached block `(k, K, d)`, one caption each, its embedding."""

    blocks: torch.Tensor
    captions: list[str]
    caption_vectors: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def last(self) -> Draw:
        return Draw(self.blocks[:, -1], self.captions, self.caption_vectors)


@dataclass
class Context:
    """What the methods share in one process: the config, the frozen LM (input-prefix EPALM), the trained stages."""

    cfg: FewShotConfig
    lm: CaptionLM
    pretrained: SharedProjector  # stage 1
    adapted: SharedProjector | None  # stage 2's projector, trained with the hypernetwork (None before stage 2)
    hypernetwork: HyperNetwork | None
    encoder: EncoderConfig  # the new modality's (for the eP-ALM baseline)


def run_method(ctx: Context, method: str, shots: Shots, evaluation: torch.Tensor, seed: int, steps: int,
               lr: float) -> tuple[list[str], dict]:
    """Captions of the evaluation items `(T, K, d)`, and what the run measured (losses)."""
    return METHODS[method](ctx, shots, evaluation, seed, steps, lr)


def _fit(loss_of_batch: Callable[[list[int]], torch.Tensor], groups: list[dict], n: int, seed: int, steps: int,
         batch_size: int) -> list[float]:
    order = batches(n, batch_size, steps, torch.Generator().manual_seed(seed))
    return train_steps(groups, lambda step: loss_of_batch(order[step]), steps, int(WARMUP_FRACTION * steps))


def _projector_run(ctx: Context, projector: SharedProjector, shots: Shots, evaluation: torch.Tensor, seed: int,
                   steps: int, lr: float, trainable: list[torch.nn.Parameter], adapter: TrainableAdapter | None = None,
                   zero_features: bool = False) -> tuple[list[str], dict]:
    bridge = Bridge(projector)
    features, test = shots.blocks[:, -1], evaluation[:, -1]
    if zero_features:
        features, test = torch.zeros_like(features), torch.zeros_like(test)
    statistics = FeatureStatistics.of(features)
    common, test_common = bridge.common(features, statistics), bridge.common(test, statistics)

    def tokens(rows: torch.Tensor) -> torch.Tensor:
        return bridge.tokens(rows, adapter() if adapter is not None else None)

    def loss_of_batch(index: list[int]) -> torch.Tensor:
        return ctx.lm.loss([shots.captions[i] for i in index], tokens=tokens(common[index]))

    start = adapter().detached() if adapter is not None else None
    losses = _fit(loss_of_batch, [{"params": trainable, "lr": lr}], len(shots), seed, steps, ctx.cfg.study.batch_size)
    info: dict = {"losses": losses}
    if start is not None:  # how far training moved the adapter from where it started (Frobenius norm)
        end = adapter().detached()
        info["adapter_change"] = sum((getattr(end, k) - getattr(start, k)).norm().item() for k in ("down", "up", "bias"))
    with torch.no_grad():
        evaluation_tokens = tokens(test_common)
    return ctx.lm.captions(ctx.cfg.study.max_new_tokens, tokens=evaluation_tokens), info


def _frozen_copy(projector: SharedProjector) -> SharedProjector:
    return copy.deepcopy(projector).requires_grad_(False)


def hypernetwork(ctx: Context, shots: Shots, evaluation: torch.Tensor, seed: int, steps: int, lr: float):
    bridge = Bridge(ctx.adapted)
    support = shots.last()
    statistics = FeatureStatistics.of(support.features)
    with torch.no_grad():
        adapter = ctx.hypernetwork(bridge.common(support.features, statistics), support.caption_vectors)
        evaluation_tokens = bridge.tokens(bridge.common(evaluation[:, -1], statistics), adapter)
    return ctx.lm.captions(ctx.cfg.study.max_new_tokens, tokens=evaluation_tokens), {"losses": []}


def hypernetwork_finetuned(ctx: Context, shots: Shots, evaluation: torch.Tensor, seed: int, steps: int, lr: float):
    projector = _frozen_copy(ctx.adapted)
    support = shots.last()
    bridge = Bridge(projector)
    with torch.no_grad():
        generated = ctx.hypernetwork(bridge.common(support.features, FeatureStatistics.of(support.features)),
                                     support.caption_vectors)
    adapter = TrainableAdapter(generated.rank, projector.width, projector.hidden, start=generated.detached())
    return _projector_run(ctx, projector, shots, evaluation, seed, steps, lr, list(adapter.parameters()), adapter)


def scratch(ctx: Context, shots: Shots, evaluation: torch.Tensor, seed: int, steps: int, lr: float):
    projector = new_projector(ctx.cfg, ctx.lm.model.lm.embedding_size, seed)
    return _projector_run(ctx, projector, shots, evaluation, seed, steps, lr, list(projector.parameters()))


def blind(ctx: Context, shots: Shots, evaluation: torch.Tensor, seed: int, steps: int, lr: float):
    projector = new_projector(ctx.cfg, ctx.lm.model.lm.embedding_size, seed)
    return _projector_run(ctx, projector, shots, evaluation, seed, steps, lr, list(projector.parameters()),
                          zero_features=True)


def pretrained_finetuned(ctx: Context, shots: Shots, evaluation: torch.Tensor, seed: int, steps: int, lr: float):
    projector = copy.deepcopy(ctx.pretrained).requires_grad_(True)
    return _projector_run(ctx, projector, shots, evaluation, seed, steps, lr, list(projector.parameters()))


def lora(ctx: Context, shots: Shots, evaluation: torch.Tensor, seed: int, steps: int, lr: float):
    projector = _frozen_copy(ctx.pretrained)
    torch.manual_seed(seed)
    adapter = TrainableAdapter(ctx.cfg.projector.rank, projector.width, projector.hidden)
    return _projector_run(ctx, projector, shots, evaluation, seed, steps, lr, list(adapter.parameters()), adapter)


def epalm_injection(ctx: Context, shots: Shots, evaluation: torch.Tensor, seed: int, steps: int, lr: float):
    model, tokenizer = injection_model(ctx.cfg.lm, ctx.encoder, ctx.cfg.epalm, shots.blocks.shape[1], seed)
    lm = CaptionLM(model, tokenizer, text_format=ctx.cfg.text_format, caption_prompt=ctx.cfg.caption_prompt)
    blocks = model.config.injected_hidden_states
    features, test = shots.blocks[:, -blocks:], evaluation[:, -blocks:]
    trainable = [p for p in model.parameters() if p.requires_grad]

    def loss_of_batch(index: list[int]) -> torch.Tensor:
        model.train()
        return lm.loss([shots.captions[i] for i in index], features=features[index])

    losses = _fit(loss_of_batch, [{"params": trainable, "lr": lr}], len(shots), seed, steps, ctx.cfg.study.batch_size)
    return lm.captions(ctx.cfg.study.max_new_tokens, features=test), {"losses": losses}


METHODS = {
    "hypernetwork": hypernetwork, "hypernetwork_finetuned": hypernetwork_finetuned, "scratch": scratch,
    "pretrained_finetuned": pretrained_finetuned, "lora": lora, "epalm_injection": epalm_injection, "blind": blind,
}
