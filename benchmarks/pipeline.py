"""Training steps fed by the real data pipeline: decode + augment + encode on the fly, or the feature cache.

The samples come from the synthetic image VQA data (built into a temporary folder, or `--data_dir`
holding one); the media go through the project's `MediaTextDataset` and a `DataLoader`, the feature
cache through `epalm.dataset.feature_cache` as a run builds it. The text is the same fixed token batch in both
modes (tokenising costs the same either way), so the two differ exactly by what the cache removes.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader

from epalm.dataset.feature_cache import FeatureCache, encode_items
from epalm.dataset.media_dataset import MediaTextDataset
from epalm.dataset.tasks import TASK_READERS, TaskSplit
from epalm.demo.synthetic.build import build_image_dataset
from epalm.models.modalities import get_modality
from benchmarks import workloads
from benchmarks.workloads import Inputs
from epalm.common.errors import DataFormatError
from epalm.models.epalm import EPALM
from epalm.training.loss import training_loss


def synthetic_split(data_dir: Path | None, workdir: Path, samples: int) -> TaskSplit:
    """At least `samples` training questions of the synthetic image VQA data (reused when complete)."""
    if data_dir is None:
        data_dir = workdir / "data"
        build_image_dataset(data_dir, seed=0, n_train=samples, n_val=1, n_test=1, questions_per_image=1,
                            progress=False)
    split = TASK_READERS.build("vqa_v2", data_dir, "karpathy_train")
    if len(split) < samples:
        raise DataFormatError(f"{split.annotation_file}: {len(split)} training questions, the benchmark needs "
                              f"{samples}")
    split.samples = split.samples[:samples]
    return split


def build_feature_cache(model: EPALM, split: TaskSplit, folder: Path, device: torch.device) -> FeatureCache:
    """Encode every image once with the test-time preprocessing, as a run with `feature_cache: true` does."""
    computed, errors = encode_items(
        sorted({s.media for s in split}), split.media_root,
        load=get_modality("image").preprocessor(model.encoders["image"], model.config.encoders["image"], train=False),
        encode=lambda batch: model.encode(batch.to(device)), batch_size=64, show_progress=False,
    )
    cache = FeatureCache(folder)
    cache.add(computed, errors, split.media_root)
    return cache


class StackMedia:
    """Collate: stack the batch's media or features (a class, so data-loader workers can pickle it)."""

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor | None]:
        return {key: torch.stack([item[key] for item in items]) if key in items[0] else None
                for key in ("media", "features")}


def _endless(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def pipeline_step(
    model: EPALM,
    optimizer: torch.optim.Optimizer,
    split: TaskSplit,
    inputs: Inputs,
    cache: FeatureCache | None,
    device: torch.device,
    workers: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Callable[[], torch.Tensor]:
    """One training step on the next batch of the loader: media decoded and augmented (`cache` None, as a
    run with the default `augment: true`) or features read from `cache`."""
    if cache is None:
        preprocess = get_modality("image").preprocessor(model.encoders["image"], model.config.encoders["image"], train=True)
        dataset = MediaTextDataset(split, True, 0, {"image": preprocess})
    else:
        dataset = MediaTextDataset(split, True, 0, None, features={"image": cache}, augment=False)
    batch_size = inputs.input_ids.shape[0]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=StackMedia(), num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True, pin_memory=device.type == "cuda")
    batches = _endless(loader)
    model.train()
    labels = workloads.training_labels(inputs.input_ids, "answer")

    def step() -> torch.Tensor:
        batch = next(batches)
        media = batch["media"].to(device) if batch["media"] is not None else None
        features = batch["features"].to(device) if batch["features"] is not None else None
        with autocast():
            loss = training_loss(model, inputs.input_ids, inputs.attention_mask, labels, media=media, features=features)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step
