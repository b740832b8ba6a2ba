"""Stage 2: train the hypernetwork (with the shared projector, started from stage 1) on episodes of the seen
modalities, each presented through a fresh random isometry.

An episode: a seen modality; an isometry drawn from the seed `fewshot-isometry/<seed>/<step>/<episode>` (logged);
k support items with one caption each (k log-uniform in [shots_min, shots_max]); `queries` other items. The
support's features, normalised by the support's own statistics (as a new modality's k samples will be), mapped
to the common width and turned by the isometry, give the generated adapter; the queries, through the same
normalisation, map and isometry, are captioned by the adapted projector, and their caption loss trains both.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch

from epalm.models.fewshot.common_width import FeatureStatistics
from epalm.models.fewshot.hypernetwork import HyperNetwork
from epalm.models.fewshot.isometry import IsometricTransform
from epalm.models.fewshot.projector import SharedProjector
from epalm.studies.fewshot.bridge import Bridge
from epalm.studies.fewshot.caption_lm import CaptionLM
from epalm.studies.fewshot.config import FewShotConfig
from epalm.studies.fewshot.optimisation import train_steps
from epalm.studies.fewshot.sources import Draw


@dataclass
class Episode:
    source: str
    shots: int
    isometry: dict | None


def new_hypernetwork(cfg: FewShotConfig, caption_width: int, seed: int) -> HyperNetwork:
    torch.manual_seed(seed)
    h, p = cfg.hypernetwork, cfg.projector
    return HyperNetwork(p.width, p.hidden, caption_width, p.rank, h.summary_width, h.pooling, h.solver)


def adapted_tokens(bridge: Bridge, hypernetwork: HyperNetwork, support: Draw, query_features: torch.Tensor,
                   isometry: IsometricTransform | None = None, with_captions: bool = True) -> torch.Tensor:
    """The LM tokens of the queries under the adapter generated from the support (one forward pass)."""
    statistics = FeatureStatistics.of(support.features)
    adapter = hypernetwork(bridge.common(support.features, statistics, isometry),
                           support.caption_vectors if with_captions else None)
    return bridge.tokens(bridge.common(query_features, statistics, isometry), adapter)


def log_uniform_shots(rng: random.Random, low: int, high: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def train_hypernetwork(cfg: FewShotConfig, sources: list, projector: SharedProjector, lm: CaptionLM,
                       progress: bool = True) -> tuple[HyperNetwork, dict]:
    recipe = cfg.hypernetwork
    hypernetwork = new_hypernetwork(cfg, lm.model.lm.embedding_size, cfg.seed)
    bridge = Bridge(projector)
    rng = random.Random(f"fewshot-hypernetwork/{cfg.seed}")
    episodes: list[list[Episode]] = []

    def loss_of_step(step: int) -> torch.Tensor:
        tokens, captions, step_episodes = [], [], []
        for index in range(recipe.episodes):
            source = rng.choice(sources)
            shots = min(log_uniform_shots(rng, recipe.shots_min, recipe.shots_max), len(source) - recipe.queries)
            chosen = rng.sample(range(len(source)), shots + recipe.queries)
            isometry = (IsometricTransform(cfg.projector.width, f"fewshot-isometry/{cfg.seed}/{step}/{index}",
                                           recipe.permute) if recipe.isometry else None)
            support, query = source.draw(chosen[:shots], rng), source.draw(chosen[shots:], rng)
            tokens.append(adapted_tokens(bridge, hypernetwork, support, query.features, isometry))
            captions.extend(query.captions)
            step_episodes.append(Episode(source.name, shots, isometry.describe() if isometry else None))
        episodes.append(step_episodes)
        return lm.loss(captions, tokens=torch.cat(tokens))

    start, cpu = time.perf_counter(), time.process_time()
    groups = [{"params": list(hypernetwork.parameters()), "lr": recipe.lr},
              {"params": list(projector.parameters()), "lr": recipe.projector_lr}]
    losses = train_steps(groups, loss_of_step, recipe.steps, recipe.warmup_steps, "stage 2: hypernetwork", progress)
    report = {
        "stage": "train_hypernetwork", "steps": recipe.steps, "sources": [s.name for s in sources],
        "loss_first_20_steps": _mean(losses[:20]), "loss_last_20_steps": _mean(losses[-20:]),
        "ridge_lambda_over_width": round(hypernetwork.set_encoder.log_ridge.exp().item(), 4),
        "episodes": [[vars(e) for e in step] for step in episodes],  # every isometry's seed: each is rebuilt from it
        "wall_seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
        "torch_threads": torch.get_num_threads(),
    }
    return hypernetwork, report


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
