"""Task splits -> datasets -> data loaders, for one model."""
from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from dataset.collate import TextCollator
from dataset.media_dataset import MediaTextDataset, MediaDecoder
from dataset.tasks import TASK_READERS, TaskSplit
from models.epalm import EPALM
from models.user_errors import DataFormatError
from training.run_config import RunConfig

logger = logging.getLogger(__name__)


def read_split(cfg: RunConfig, split: str, train: bool) -> TaskSplit:
    options = dict(cfg.task.reader_options)
    if cfg.task.media_root:
        options["media_root"] = cfg.task.media_root
    task_split = TASK_READERS.build(cfg.task.reader, cfg.task.data_dir, split, **options)
    if train:
        # VQA questions with no answer in the label dict cannot be trained on (VL-T5 files have some).
        kept = [s for s in task_split.samples if s.targets]
        if len(kept) < len(task_split.samples):
            logger.info("%s/%s: %d samples without a target left out of training", cfg.task.reader, split,
                        len(task_split.samples) - len(kept))
        task_split.samples = kept
    limit = cfg.task.max_train_samples if train else cfg.task.max_eval_samples
    if limit is not None:
        task_split.samples = task_split.samples[:limit]
    if not task_split.samples:
        raise DataFormatError(f"{task_split.annotation_file}: split '{split}' has no usable sample")
    return task_split


def build_dataset(split: TaskSplit, model: EPALM, cfg: RunConfig, train: bool, features=None) -> MediaTextDataset:
    decode = transform = None
    if model.encoder is not None and features is None:
        enc = cfg.model.encoder
        decode = MediaDecoder(split.modality, num_frames=enc.num_frames, sample_rate=enc.sample_rate)
        transform = model.encoder.preprocessing(train and cfg.train.augment)
    return MediaTextDataset(split, train, cfg.seed, decode, transform, features, augment=cfg.train.augment)


def build_loader(dataset: MediaTextDataset, tokenizer, cfg: RunConfig, train: bool) -> DataLoader:
    collator = TextCollator(
        tokenizer, dataset.split.kind, train, loss_tokens=cfg.train.loss_tokens, max_len=cfg.train.max_text_len
    )
    workers = cfg.train.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size if train else cfg.eval.batch_size,
        shuffle=train,
        collate_fn=collator,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,  # workers must see the dataset's epoch, set before each pass
        drop_last=False,
    )
