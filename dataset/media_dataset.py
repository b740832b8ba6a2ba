"""A task split as a torch Dataset: decoded, preprocessed media (or cached encoder features) plus text.

Randomness (which VQA answer is the target, which caption, the augmentation, which video frames) is a
function of (seed, epoch, index) alone, so a resumed run or a run with more data-loader workers sees
exactly the same samples. A media file that cannot be decoded yields an item marked `skipped`; the
collator drops it from a training batch and keeps it, flagged, in an evaluation batch so that every
process still returns one row per sample.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from epalm.common.errors import MediaDecodeError
from epalm.dataset.records import MediaItem, Sample
from epalm.dataset.tasks.task_split import TaskSplit
from epalm.models.modalities import Preprocessor


def choose_target(sample: Sample, rng: random.Random) -> str:
    """A training target: VQA answers in proportion to their label score, captions uniformly."""
    if not sample.targets:
        raise ValueError(f"sample {sample.uid!r} ({sample.media}) has no target to train on")
    if sample.target_weights and sum(sample.target_weights) > 0:
        return rng.choices(sample.targets, weights=sample.target_weights, k=1)[0]
    return rng.choice(sample.targets)


class MediaTextDataset(Dataset):
    """Items: `{"index", "uid", "prompt", "target", "skipped"}` and the media:
    - one instance (reference formats): `"media"` (tensor) or `"features"` (cached `(K, d_enc)` tensor);
    - chat rows: `"messages"` and `"instances"`, `[{"modality", "media" | "features"}]` in placeholder order.

    preprocess: `{modality: Preprocessor}`, the modality plugins' decode + transform for the model's encoders
        (models/modalities); None with `features` (cache) or for a blind model.
    features: `{modality: mapping from media path to the cached (K, d_enc) encoder output}`.
    augment: False gives training items the test-time decoding (middle frames; the preprocessor's transform
        is the caller's choice).
    """

    def __init__(
        self,
        split: TaskSplit,
        train: bool,
        seed: int,
        preprocess: dict[str, Preprocessor] | None,
        features: dict[str, Any] | None = None,
        augment: bool = True,
    ):
        self.split = split
        self.train = train
        self.augment = augment
        self.seed = seed
        self.preprocess = preprocess
        self.features = features
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def _rng_seed(self, index: int) -> int:
        return hash((self.seed, self.epoch if self.train else -1, index)) & 0x7FFFFFFF

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.split[index]
        seed = self._rng_seed(index)
        rng = random.Random(seed)
        item: dict[str, Any] = {
            "index": index,
            "uid": sample.uid,
            "prompt": sample.prompt,
            "target": choose_target(sample, rng) if self.train else None,
            "skipped": None,
        }
        try:
            if sample.messages is not None:
                item["messages"] = sample.messages
                item["instances"] = [self._instance(entry, seed + k) for k, entry in enumerate(sample.items)]
            elif self.features is not None or self.preprocess is not None:
                instance = self._instance(MediaItem(self.split.modality, sample.media), seed)
                item.update({key: value for key, value in instance.items() if key != "modality"})
        except MediaDecodeError as error:
            item["skipped"] = f"{error.path}: {error.reason}"
        return item

    def _instance(self, entry: MediaItem, seed: int) -> dict[str, Any]:
        """`{"modality", "features" | "media"}` of one instance; {"modality"} alone for a blind model."""
        instance: dict[str, Any] = {"modality": entry.modality}
        if self.features is not None:
            instance["features"] = self._table(self.features, entry.modality)[entry.path]
        elif self.preprocess is not None:
            preprocess = self._table(self.preprocess, entry.modality)
            path = str(self.split.media_root / entry.path)
            # Test-time decoding (middle frames) when augmentation is off, whatever the preprocessor's own mode.
            decoded = preprocess.modality.decode(path, self.train and self.augment, np.random.default_rng(seed),
                                                 preprocess.encoder_cfg)
            with seeded_global_rngs(seed):
                instance["media"] = preprocess.transform(decoded)
        return instance

    @staticmethod
    def _table(by_modality: dict[str, Any], modality: str) -> Any:
        if modality not in by_modality:
            raise ValueError(f"no encoder for modality '{modality}' (the model reads {sorted(by_modality)}): "
                             "add it under model.encoders")
        return by_modality[modality]


@contextlib.contextmanager
def seeded_global_rngs(seed: int):
    """Augmentations draw from torch's, Python's and NumPy's global RNGs (timm's RandAugment uses all
    three): seed them for one call and restore them after, so the draw depends on `seed` only."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
