"""Stage 0: each modality's data (built when synthetic) and its frozen encoder's features, computed once.

Items are read through the project's task readers and grouped by media file (all captions of an item
together); features come from the project's feature cache (dataset/feature_cache.py, under
`<out_dir>/features/<key>`): the modality plugin's test-time decoding and the encoder's CLS of its last
`feature_blocks` blocks, as `model.encode` gives them. Items that fail to decode are reported and left out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from epalm.common.errors import ConfigError
from epalm.dataset.feature_cache import FeatureCache, cache_key, encode_items, encoder_identity
from epalm.dataset.tasks import TASK_READERS, TaskSplit
from epalm.demo.synthetic.build import build_image_dataset
from epalm.demo.synthetic.build_audio import build_audio_dataset
from epalm.demo.synthetic.build_sensor import build_sensor_dataset
from epalm.demo.synthetic.build_video import build_video_dataset
from epalm.models.encoders import build_encoder
from epalm.models.modalities import get_modality
from epalm.studies.fewshot.caption_lm import study_readout
from epalm.studies.fewshot.config import FewShotConfig, ModalitySource
from epalm.training.scoring import attribute_vocabulary

logger = logging.getLogger(__name__)

BUILDERS: dict[str, Callable[..., Any]] = {
    "image": build_image_dataset, "video": build_video_dataset, "audio": build_audio_dataset,
    "sensor": build_sensor_dataset,
}


@dataclass
class ModalityPool:
    """The items of one split of one modality, aligned: features[i] is the item with captions[i]."""

    name: str
    modality: str  # the plugin's name
    split: TaskSplit
    uids: list[Any]
    captions: list[list[str]]
    attributes: list[dict[str, str]] | None
    features: torch.Tensor  # (N, K, d) float32

    @property
    def width(self) -> int:
        return self.features.shape[-1]

    def __len__(self) -> int:
        return len(self.uids)

    def vocabulary(self) -> dict | None:
        return attribute_vocabulary(self.split)

    def subset(self, indices: list[int]) -> ModalityPool:
        return ModalityPool(self.name, self.modality, self.split, [self.uids[i] for i in indices],
                            [self.captions[i] for i in indices],
                            None if self.attributes is None else [self.attributes[i] for i in indices],
                            self.features[indices])


def data_dir(cfg: FewShotConfig, name: str, source: ModalitySource) -> Path:
    return Path(source.data_dir) if source.data_dir else Path(cfg.out_dir) / "data" / name


def ensure_data(cfg: FewShotConfig, name: str, source: ModalitySource, progress: bool = True) -> Path:
    root = data_dir(cfg, name, source)
    if source.build:
        if source.build not in BUILDERS:
            raise ConfigError(f"{name}.build: unknown synthetic data set {source.build!r}; known: {sorted(BUILDERS)}")
        BUILDERS[source.build](root, progress=progress, **source.build_options)
    return root


def _items(split: TaskSplit, max_items: int | None) -> tuple[list[str], list[Any], list[list[str]], list | None]:
    """Samples grouped by media file, in first-seen order: media, uid, captions, attributes."""
    order: dict[str, int] = {}
    uids, captions, attributes = [], [], []
    for sample in split:
        if sample.media not in order:
            if max_items is not None and len(order) >= max_items:
                continue
            order[sample.media] = len(order)
            uids.append(sample.uid)
            captions.append([])
            attributes.append(sample.meta.get("attributes"))
        captions[order[sample.media]].extend(sample.targets)
    has_attributes = all(a is not None for a in attributes)
    return list(order), uids, captions, attributes if has_attributes else None


def load_pool(cfg: FewShotConfig, name: str, source: ModalitySource, split_name: str, progress: bool = True
              ) -> ModalityPool:
    """One split of one modality with its cached features (computing the missing ones)."""
    root = ensure_data(cfg, name, source, progress)
    split = TASK_READERS.build(source.reader, root, split_name)
    media, uids, captions, attributes = _items(split, source.max_items)
    encoder_cfg = source.encoder_section()
    encoder = build_encoder(encoder_cfg)
    blocks = min(cfg.feature_blocks, encoder.num_layers)
    readout = study_readout(encoder_cfg)  # CLS tokens, or token means without one
    key = cache_key(encoder_identity(encoder_cfg, readout), encoder.preprocessing_fingerprint(), blocks)
    cache = FeatureCache(Path(cfg.out_dir) / "features" / key)
    missing = cache.missing(media, split.media_root)
    if missing:
        preprocess = get_modality(split.modality).preprocessor(encoder, encoder_cfg, train=False)
        computed, errors = encode_items(missing, split.media_root, load=preprocess,
                                        encode=lambda batch: encoder(batch, blocks, readout), batch_size=128,
                                        show_progress=progress)
        cache.add(computed, errors, split.media_root)
    keep = [i for i, m in enumerate(media) if "row" in cache.entries[m]]
    if len(keep) < len(media):
        logger.warning("%s %s: %d of %d items failed to decode and are left out (e.g. %s: %s)", name, split_name,
                       len(media) - len(keep), len(media), *next((m, e["error"]) for m, e in cache.entries.items()
                                                            if m in set(media) and "error" in e))
    if not keep:
        raise ConfigError(f"{name} {split_name}: no item could be decoded")
    features = torch.stack([cache[media[i]] for i in keep]).float()
    return ModalityPool(name, split.modality, split, [uids[i] for i in keep], [captions[i] for i in keep],
                        None if attributes is None else [attributes[i] for i in keep], features)
