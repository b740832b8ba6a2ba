"""Stage 1: pretrain the shared projector on the seen modalities at once (and their captions' text).

Each step takes one seen modality (in turn, in a seeded order), a batch of its items with one caption each,
maps their features to the common width (normalised by the modality's training statistics) and trains the
projector on the frozen LM's caption loss. No adapter, no isometry: this is the "pre-trained shared projector"
that the fine-tuning and LoRA baselines start from, and the starting point of stage 2.
"""
from __future__ import annotations

import random
import time

import torch

from epalm.models.fewshot.projector import SharedProjector
from epalm.studies.fewshot.bridge import Bridge
from epalm.studies.fewshot.caption_lm import CaptionLM
from epalm.studies.fewshot.config import FewShotConfig
from epalm.studies.fewshot.optimisation import train_steps


def new_projector(cfg: FewShotConfig, embed_size: int, seed: int) -> SharedProjector:
    torch.manual_seed(seed)
    p = cfg.projector
    return SharedProjector(p.width, p.hidden, p.tokens, embed_size)


def pretrain_projector(cfg: FewShotConfig, sources: list, lm: CaptionLM, progress: bool = True
                       ) -> tuple[SharedProjector, dict]:
    recipe = cfg.pretrain
    projector = new_projector(cfg, lm.model.lm.embedding_size, cfg.seed)
    bridge = Bridge(projector)
    statistics = {source.name: source.statistics() for source in sources}
    rng = random.Random(f"fewshot-pretrain/{cfg.seed}")
    order = [sources[step % len(sources)] for step in range(recipe.steps)]
    rng.shuffle(order)
    per_source: dict[str, list[float]] = {source.name: [] for source in sources}

    def loss_of_step(step: int) -> torch.Tensor:
        source = order[step]
        draw = source.draw(rng.sample(range(len(source)), min(recipe.batch_size, len(source))), rng)
        tokens = bridge.tokens(bridge.common(draw.features, statistics[source.name]))
        loss = lm.loss(draw.captions, tokens=tokens)
        per_source[source.name].append(loss.item())
        return loss

    start, cpu = time.perf_counter(), time.process_time()
    losses = train_steps([{"params": list(projector.parameters()), "lr": recipe.lr}], loss_of_step, recipe.steps,
                         recipe.warmup_steps, "stage 1: shared projector", progress)
    report = {
        "stage": "pretrain_projector", "steps": recipe.steps, "sources": [s.name for s in sources],
        "loss_first_20_steps": _mean(losses[:20]), "loss_last_20_steps": _mean(losses[-20:]),
        "loss_last_50_per_source": {name: _mean(values[-50:]) for name, values in per_source.items()},
        "wall_seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
        "torch_threads": torch.get_num_threads(),
    }
    return projector, report


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
