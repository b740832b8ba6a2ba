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

from dataset.media.errors import MediaDecodeError
from dataset.records import Sample
from dataset.tasks.task_split import TaskSplit
from models.modalities import Preprocessor


def choose_target(sample: Sample, rng: random.Random) -> str:
    """A training target: VQA answers in proportion to their label score, captions uniformly."""
    if not sample.targets:
        raise ValueError(f"sample {sample.uid!r} ({sample.media}) has no target to train on")
    if sample.target_weights and sum(sample.target_weights) > 0:
        return rng.choices(sample.targets, weights=sample.target_weights, k=1)[0]
    return rng.choice(sample.targets)


class MediaTextDataset(Dataset):
    """Items: `{"index", "uid", "prompt", "target", "media" (tensor) | "features" (tensor), "skipped"}`.

    preprocess: the modality plugin's decode + transform for the encoder (models/modalities); None with
        `features` (cache) or for a blind model.
    augment: False gives training items the test-time decoding (middle frames; the preprocessor's transform
        is the caller's choice).
    features: a mapping from media path to the cached `(K, d_enc)` encoder output.
    """

    def __init__(
        self,
        split: TaskSplit,
        train: bool,
        seed: int,
        preprocess: Preprocessor | None,
        features: Any = None,
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
            if self.features is not None:
                item["features"] = self.features[sample.media]
            elif self.preprocess is not None:
                item["media"] = self._load(str(self.split.media_path(sample)), seed)
        except MediaDecodeError as error:
            item["skipped"] = f"{error.path}: {error.reason}"
        return item

    def _load(self, path: str, seed: int) -> torch.Tensor:
        # Test-time decoding (middle frames) when augmentation is off, whatever the preprocessor's own mode.
        decoded = self.preprocess.modality.decode(path, self.train and self.augment, np.random.default_rng(seed),
                                                  self.preprocess.encoder_cfg)
        with seeded_global_rngs(seed):
            return self.preprocess.transform(decoded)


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
