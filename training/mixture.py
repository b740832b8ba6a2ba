"""Joint training on several tasks (and modalities) at once: `mixture` in the run config.

Every batch comes from one task, drawn with probability proportional to the task's weight; within a task
the samples follow a shuffled order that cycles when the task runs out. The draw is a function of
(seed, epoch, batch number) only, so a resumed run sees the same batches. An epoch is as many batches as
the tasks' training samples fill. Each batch carries its task's collation (QA, caption or chat text) and
its media as `{modality: tensor}`, so one model reads every modality with its own encoder and connector.
"""
from __future__ import annotations

import math
import random
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from epalm.dataset.media_dataset import MediaTextDataset


class MixtureDataset(Dataset):
    """The tasks' datasets side by side; an index is (task number, index in the task)."""

    def __init__(self, datasets: dict[str, MediaTextDataset]):
        self.names = list(datasets)
        self.datasets = [datasets[name] for name in self.names]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        task, index = key
        item = self.datasets[task][index]
        item["task"] = task
        return item


class MixtureBatchSampler(Sampler):
    """Task-homogeneous batches of `(task, index)` keys; the epoch is read from the dataset (set by the trainer
    before each pass, also in processes whose sampler accelerate wrapped)."""

    def __init__(self, dataset: MixtureDataset, weights: list[float], batch_size: int, seed: int):
        if len(weights) != len(dataset.datasets) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"mixture weights must be >= 0, one per task, not all 0: got {weights}")
        self.dataset, self.weights, self.batch_size, self.seed = dataset, weights, batch_size, seed

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        rng = random.Random(hash((self.seed, self.dataset.epoch, -1)))  # ints only: str hashes are salted
        orders = []
        for task, data in enumerate(self.dataset.datasets):
            order = list(range(len(data)))
            random.Random(hash((self.seed, self.dataset.epoch, task))).shuffle(order)
            orders.append(order)
        cursors = [0] * len(orders)
        tasks = list(range(len(orders)))
        for _ in range(len(self)):
            task = rng.choices(tasks, weights=self.weights, k=1)[0]
            order, start = orders[task], cursors[task]
            batch = [(task, order[(start + k) % len(order)]) for k in range(self.batch_size)]
            cursors[task] = (start + self.batch_size) % len(order)
            yield batch


class MixtureCollator:
    """Collate a batch with its task's collator, the media keyed by modality; `batch["task"]` names the task."""

    def __init__(self, names: list[str], collators: list, modalities: list[str]):
        self.names, self.collators, self.modalities = names, collators, modalities

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        task = items[0]["task"]
        if any(item["task"] != task for item in items):
            raise RuntimeError("a mixture batch holds samples of several tasks")
        batch = self.collators[task](items)
        for key in ("media", "features"):
            if key in batch and not isinstance(batch[key], dict):
                batch[key] = {self.modalities[task]: batch[key]}
        batch["task"] = self.names[task]
        return batch


def mixture_loader(datasets: dict[str, MediaTextDataset], collators: dict[str, Any], weights: dict[str, float],
                   batch_size: int, seed: int, num_workers: int, pin_memory: bool) -> DataLoader:
    dataset = MixtureDataset(datasets)
    sampler = MixtureBatchSampler(dataset, [weights[name] for name in dataset.names], batch_size, seed)
    collate = MixtureCollator(dataset.names, [collators[name] for name in dataset.names],
                              [datasets[name].split.modality for name in dataset.names])
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False)
