"""The study's stages in order, each reused from `<out_dir>` when its configuration is unchanged:

0. features: each modality's data and cached encoder features (studies/fewshot/features.py);
1. the shared projector on the seen modalities (pretrain_projector.py) -> `<out_dir>/stage1_projector/`;
2. the hypernetwork with the projector, on isometry-augmented episodes (train_hypernetwork.py)
   -> `<out_dir>/stage2_hypernetwork/`.
`prepare(cfg)` returns what the few-shot methods need; `train=False` (the study's worker processes) only loads.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from epalm.common.errors import MissingFileError
from epalm.studies.fewshot.caption_lm import CaptionLM, prefix_model
from epalm.studies.fewshot.checkpoints import fingerprint, load_stage, save_stage
from epalm.studies.fewshot.config import FewShotConfig, config_dict
from epalm.studies.fewshot.features import ModalityPool, load_pool
from epalm.studies.fewshot.methods import Context
from epalm.studies.fewshot.pretrain_projector import new_projector, pretrain_projector
from epalm.studies.fewshot.sources import CaptionVectors, MediaSource, TextSource
from epalm.studies.fewshot.train_hypernetwork import new_hypernetwork, train_hypernetwork

logger = logging.getLogger(__name__)

STAGE1, STAGE2 = "stage1_projector", "stage2_hypernetwork"


@dataclass
class Prepared:
    ctx: Context
    train: ModalityPool  # the new modality's items the k shots are drawn from
    vectors: CaptionVectors  # their captions' embeddings
    evaluation: ModalityPool  # the fixed evaluation items (test split, or val for design choices)
    seconds: dict[str, float]  # what each stage took here (0 when loaded)


def stage_fingerprints(cfg: FewShotConfig) -> dict[str, str]:
    values = config_dict(cfg)
    shared = {key: values[key] for key in ("lm", "seed", "seen", "text", "feature_blocks", "projector")}
    shared.update(cfg.text_settings())
    first = fingerprint({**shared, "pretrain": values["pretrain"]})
    return {STAGE1: first, STAGE2: fingerprint({"stage1": first, "hypernetwork": values["hypernetwork"]})}


def seen_sources(cfg: FewShotConfig, lm: CaptionLM, progress: bool) -> list:
    embedding = lm.model.lm.model.get_input_embeddings()
    sources = []
    for name, source in cfg.seen.items():
        pool = load_pool(cfg, name, source, source.train_split, progress)
        sources.append(MediaSource(pool, CaptionVectors(pool.captions, embedding, lm.tokenizer)))
    if cfg.text:
        sources.append(TextSource(list(sources)))
    return sources


def prepare(cfg: FewShotConfig, train: bool = True, force: bool = False, progress: bool = True,
            until: str = STAGE2) -> Prepared:
    """Stages 0 to `until` (STAGE1 or STAGE2): trained when absent (or `force`), else loaded."""
    out = Path(cfg.out_dir)
    seconds: dict[str, float] = {}
    new = cfg.new_source
    start = time.perf_counter()
    model, tokenizer = prefix_model(cfg.lm, new.encoder_section(), cfg.projector.tokens)
    lm = CaptionLM(model, tokenizer, text_format=cfg.text_format, caption_prompt=cfg.caption_prompt)
    new_train = load_pool(cfg, cfg.new_name, new, new.train_split, progress)
    evaluation_split = new.test_split if cfg.study.eval_split == "test" else new.val_split
    if not evaluation_split:
        raise MissingFileError(f"new.{cfg.new_name}: no {cfg.study.eval_split}_split to evaluate on")
    evaluation = load_pool(cfg, cfg.new_name, new, evaluation_split, progress)
    if cfg.study.eval_items is not None:
        evaluation = evaluation.subset(list(range(min(cfg.study.eval_items, len(evaluation)))))
    vectors = CaptionVectors(new_train.captions, lm.model.lm.model.get_input_embeddings(), tokenizer)
    sources = seen_sources(cfg, lm, progress) if train else []
    seconds["features"] = round(time.perf_counter() - start, 1)

    fingerprints = stage_fingerprints(cfg)
    embed = lm.model.lm.embedding_size
    pretrained = new_projector(cfg, embed, cfg.seed)
    report = None if force else load_stage(out / STAGE1, {"projector": pretrained}, fingerprints[STAGE1])
    if report is None:
        _require(train, out / STAGE1)
        pretrained, report = pretrain_projector(cfg, sources, lm, progress)
        save_stage(out / STAGE1, {"projector": pretrained}, {**report, "fingerprint": fingerprints[STAGE1],
                                                            "config": config_dict(cfg)})
        seconds[STAGE1] = report["wall_seconds"]
    pretrained.requires_grad_(False)
    if until == STAGE1:
        return Prepared(Context(cfg, lm, pretrained, None, None, new.encoder_section()), new_train, vectors,
                        evaluation, seconds)

    adapted = new_projector(cfg, embed, cfg.seed)
    hypernetwork = new_hypernetwork(cfg, embed, cfg.seed)
    modules = {"projector": adapted, "hypernetwork": hypernetwork}
    report = None if force else load_stage(out / STAGE2, modules, fingerprints[STAGE2])
    if report is None:
        _require(train, out / STAGE2)
        adapted.load_state_dict(pretrained.state_dict())
        adapted.requires_grad_(True)
        hypernetwork, report = train_hypernetwork(cfg, sources, adapted, lm, progress)
        save_stage(out / STAGE2, {"projector": adapted, "hypernetwork": hypernetwork},
                   {**report, "fingerprint": fingerprints[STAGE2], "config": config_dict(cfg)})
        seconds[STAGE2] = report["wall_seconds"]
    adapted.requires_grad_(False)
    hypernetwork.requires_grad_(False)
    ctx = Context(cfg, lm, pretrained, adapted, hypernetwork, new.encoder_section())
    return Prepared(ctx, new_train, vectors, evaluation, seconds)


def _require(train: bool, folder: Path) -> None:
    if not train:
        raise MissingFileError(f"{folder}: stage not trained for this configuration (run the study's stages first)")
