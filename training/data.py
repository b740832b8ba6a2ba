"""Task splits -> datasets -> data loaders, for one model."""
from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from epalm.common.errors import DataFormatError
from epalm.dataset.chat_collate import ChatCollator
from epalm.dataset.collate import TextCollator
from epalm.dataset.media_dataset import MediaTextDataset
from epalm.dataset.tasks import TASK_READERS, TaskSplit
from epalm.models.epalm import EPALM
from epalm.models.modalities import get_modality
from epalm.training.data_checks import check_split_media, no_sample_reason
from epalm.training.run_config import RunConfig

logger = logging.getLogger(__name__)


def build_split(cfg: RunConfig, name: str) -> TaskSplit:
    """The task's reader, with its options and task.media_root, on split `name` (as read, nothing left out)."""
    options = dict(cfg.task.reader_options)
    if cfg.task.media_root:
        options["media_root"] = cfg.task.media_root
    return TASK_READERS.build(cfg.task.reader, cfg.task.data_dir, name, **options)


def read_split(cfg: RunConfig, split: str, train: bool) -> TaskSplit:
    task_split = build_split(cfg, split)
    read = len(task_split.samples)
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
        raise DataFormatError(no_sample_reason(cfg, task_split, read, train))
    check_split_media(cfg, task_split, train)  # no readable media: an error; failures named, left out of training
    return task_split


def build_dataset(split: TaskSplit, model: EPALM, cfg: RunConfig, train: bool, features=None) -> MediaTextDataset:
    preprocess = None
    if model.encoders and features is None:
        preprocess = {modality: get_modality(modality).preprocessor(encoder, cfg.model.encoders[modality],
                                                                    train and cfg.train.augment)
                      for modality, encoder in model.encoders.items()}
    return MediaTextDataset(split, train, cfg.seed, preprocess, features, augment=cfg.train.augment)


def make_collator(kind: str, tokenizer, cfg: RunConfig, train: bool,
                  tokens_per_instance: int | dict[str, int] = 0, max_len: int | None = None):
    """The run's collator for split kind qa | caption | chat (also what the chat REPL builds its prompts with).

    tokens_per_instance: text positions a media placeholder of a chat row becomes (the model's).
    max_len: the text length kept (default: train.max_text_len)."""
    max_len = cfg.train.max_text_len if max_len is None else max_len
    if kind == "chat":
        return ChatCollator(tokenizer, train, tokens_per_instance, template=cfg.task.chat_template,
                            max_len=max_len, max_instances=cfg.task.max_instances)
    return TextCollator(tokenizer, kind, train, loss_tokens=cfg.train.loss_tokens, max_len=max_len,
                        prompt_template=cfg.task.prompt_template, padding_side=cfg.eval.padding_side,
                        text_format=cfg.task.text_format, caption_prompt=cfg.task.caption_prompt)


def build_loader(dataset: MediaTextDataset, tokenizer, cfg: RunConfig, train: bool,
                 tokens_per_instance: int | dict[str, int] = 0) -> DataLoader:
    """tokens_per_instance: text positions a media placeholder of a chat row becomes (the model's)."""
    collator = make_collator(dataset.split.kind, tokenizer, cfg, train, tokens_per_instance)
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
