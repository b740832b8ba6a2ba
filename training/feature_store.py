"""Wires the frozen-encoder feature cache (dataset/feature_cache.py) into a run: one cache per encoder."""
from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import gather_object

from epalm.dataset.feature_cache import FeatureCache, cache_key, encode_items, encoder_identity
from epalm.dataset.media_survey import split_media
from epalm.dataset.tasks.task_split import TaskSplit
from epalm.models.encoders.config import EncoderConfig
from epalm.models.modalities import get_modality
from epalm.training.run_config import RunConfig


def encoder_features(cfg: RunConfig, accelerator: Accelerator, model, split: TaskSplit,
                     run_dir: Path) -> dict[str, FeatureCache] | None:
    """`{modality: cache}` of the split's encoder outputs (computing what is missing, sharded over processes),
    or None when the cache is off or the model is blind."""
    if not cfg.train.feature_cache or not model.encoders:
        return None
    configs = cfg.model.encoders
    caches = {}
    for modality, media in split_media(split).items():
        if modality not in configs:
            raise ValueError(f"{split.annotation_file}: {modality} media but the model reads "
                             f"{sorted(configs)} (add model.encoders.{modality})")
        caches[modality] = _modality_cache(cfg, accelerator, model, split, modality, configs[modality], media)
    return caches


def _modality_cache(cfg: RunConfig, accelerator: Accelerator, model, split: TaskSplit, modality: str,
                    encoder_cfg: EncoderConfig, media: list[str]) -> FeatureCache:
    encoder = model.encoder_for(modality)
    identity = encoder_identity(encoder_cfg, cfg.model.readout, cfg.model.patch_tokens)
    key = cache_key(identity, encoder.preprocessing_fingerprint(), cfg.model.injected_hidden_states)
    folder = Path(cfg.train.feature_cache_dir) / key
    cache = FeatureCache(folder)
    missing = cache.missing(media, split.media_root)
    if missing:
        preprocess = get_modality(modality).preprocessor(encoder, encoder_cfg, train=False)
        computed, errors = encode_items(
            missing[accelerator.process_index :: accelerator.num_processes],
            split.media_root,
            load=preprocess,
            encode=lambda batch: model.encode(batch.to(accelerator.device), modality),
            batch_size=cfg.eval.batch_size * 4,
            show_progress=accelerator.is_local_main_process,
        )
        parts = gather_object([(computed, errors)])
        if accelerator.is_main_process:
            merged, failed = {}, {}
            for part_computed, part_errors in parts:
                merged.update(part_computed)
                failed.update(part_errors)
            cache.add(merged, failed, split.media_root)
        accelerator.wait_for_everyone()
        cache = FeatureCache(folder)
    failed = [m for m in media if "error" in cache.entries.get(m, {})]
    unreadable = f"; {len(failed)} could not be read, e.g. {failed[0]}: {cache.entries[failed[0]]['error']}" \
        if failed else ""
    accelerator.print(f"feature cache {folder}: {len(media) - len(failed)} {modality} items read from cached encoder "
                      f"outputs{unreadable}")
    return cache
