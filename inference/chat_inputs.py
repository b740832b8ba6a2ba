"""From a typed message to model inputs: `<image:path>` tags, the media they name, and the two prompt layouts.

A tag `<name:path>` (name: any registered modality, models/modalities) puts that file in the prompt where the
tag stands; a relative path is read against the media root. The batch is built by the run's own collators
(training/data.py `make_collator`), so the model reads exactly the text it was trained and evaluated on:

- one-instance layout (the reference formats: one medium per sample): the text is the message without its
  tag, `question</a>` as the QA collator writes it (a caption model: `BOS text`, BOS alone for no text, as
  its evaluation reads an image), and the medium is `media` `(1, ...)`;
- chat layout (several media, a conversation, chat-trained models): the messages with the modality's
  placeholder (`<image>`) where each tag stood, through ChatCollator (each placeholder becomes the connector's
  positions, `media_index`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from epalm.common.errors import (ConfigError, DataFormatError, MediaDecodeError, MissingFileError, UnknownNameError,
                                 did_you_mean)
from epalm.dataset.chat_collate import ChatCollator
from epalm.dataset.tasks.chat_messages import placeholder_pattern
from epalm.inference.checkpoint_source import LoadedModel
from epalm.models.modalities import Preprocessor, get_modality, modality_names, placeholders
from epalm.training.data import make_collator

TAG = re.compile(r"<([A-Za-z][\w-]*):([^<>]+)>")


@dataclass(frozen=True)
class MediaRef:
    """One medium of a message: its modality, the path as typed, and the file it resolves to."""

    modality: str
    typed: str
    path: Path


@dataclass(frozen=True)
class Message:
    """A parsed message: `chat_text` has each tag replaced by its modality's placeholder, `plain_text` has the
    tags removed (spaces tidied), `media` lists the tags in order."""

    typed: str
    chat_text: str
    plain_text: str
    media: tuple[MediaRef, ...]


def resolve_media_path(typed: str, media_root: Path, where: str) -> Path:
    path = Path(typed.strip()).expanduser()
    resolved = path if path.is_absolute() else media_root / path
    if not resolved.is_file():
        hint = "" if path.is_absolute() else f" (relative paths are read against --media_root {media_root})"
        raise MissingFileError(f"{where}: no such file {resolved}{hint}")
    return resolved


def media_ref(modality: str, typed: str, media_root: Path) -> MediaRef:
    """A checked reference: a registered modality and an existing file."""
    names = modality_names()
    if modality not in names:
        raise UnknownNameError(f"<{modality}:{typed}>: '{modality}' is not a modality{did_you_mean(modality, names)}; "
                               f"known: {', '.join(names)}")
    return MediaRef(modality, typed, resolve_media_path(typed, media_root, f"<{modality}:{typed}>"))


def parse_media_argument(text: str, default_modality: str | None, media_root: Path) -> MediaRef:
    """`<image:a.png>`, `image:a.png` or `a.png` (the model's main modality)."""
    text = text.strip()
    tag = TAG.fullmatch(text)
    if tag:
        return media_ref(tag.group(1), tag.group(2), media_root)
    name, sep, rest = text.partition(":")
    if sep and name in modality_names():
        return media_ref(name, rest, media_root)
    if default_modality is None:
        raise ConfigError("this model is blind (model.visual: false): it reads no media")
    return media_ref(default_modality, text, media_root)


def parse_message(text: str, media_root: Path) -> Message:
    """Find the tags, check their files exist; a bare placeholder (`<image>` without a file) is refused."""
    refs = [media_ref(m.group(1), m.group(2), media_root) for m in TAG.finditer(text)]
    chat_text = TAG.sub(lambda m: get_modality(m.group(1)).placeholder, text)
    bare = placeholder_pattern().search(TAG.sub(" ", text))
    if bare:
        name = placeholders()[bare.group(0)]
        raise DataFormatError(f"{bare.group(0)} needs its file: write <{name}:path>")
    plain_text = " ".join(TAG.sub(" ", text).split())
    return Message(text, chat_text.strip(), plain_text, tuple(refs))


class MediaReadError(DataFormatError):
    """A medium that cannot be decoded; `ref` is which."""

    def __init__(self, message: str, ref: MediaRef):
        super().__init__(message)
        self.ref = ref


class MediaReader:
    """Decodes and transforms media for the model's encoders with the modality plugins' test-time
    preprocessing (the same as evaluation's); broken files become user errors."""

    def __init__(self, loaded: LoadedModel):
        self.model = loaded.model
        self._preprocessors: dict[str, Preprocessor] = {}

    def _preprocessor(self, modality: str) -> Preprocessor:
        encoders = self.model.encoders
        if not encoders:
            raise ConfigError("this model is blind (model.visual: false): it reads no media")
        if modality not in encoders:
            raise ConfigError(f"this model reads {', '.join(encoders)}, not {modality}")
        if modality not in self._preprocessors:
            self._preprocessors[modality] = get_modality(modality).preprocessor(
                encoders[modality], self.model.config.encoders[modality], train=False)
        return self._preprocessors[modality]

    def read(self, ref: MediaRef) -> torch.Tensor:
        preprocess = self._preprocessor(ref.modality)
        try:
            return preprocess(str(ref.path))
        except MediaDecodeError as error:
            raise MediaReadError(f"<{ref.modality}:{ref.typed}>: cannot read {error.path}: {error.reason}",
                                 ref) from None


def instance_batch(loaded: LoadedModel, modality: str, rows: list[tuple[str, torch.Tensor]],
                   max_len: int) -> dict[str, Any]:
    """The one-instance layout of `rows` (text, medium) of one modality, as the evaluation loader of the task
    that modality was trained on builds it: its collator (QA: the prompt template, `BOS question</a>`; captions:
    `BOS text`, BOS alone for no text), its padding side, and `media` `{modality: (B, ...)}` (keyed: a model
    reading several modalities takes it with that modality's encoder)."""
    # No truncation (evaluation cuts at train.max_text_len): the conversation checks the LM's positions instead.
    cfg = loaded.task_config(modality)
    collator = make_collator(loaded.kind(modality), loaded.tokenizer, cfg, train=False, max_len=max_len)
    batch = collator([{"index": i, "uid": i, "prompt": text, "target": None, "skipped": None, "media": media}
                      for i, (text, media) in enumerate(rows)])
    batch["media"] = {modality: batch["media"]}
    return batch


def chat_collator(loaded: LoadedModel, max_len: int) -> ChatCollator:
    """The run's chat collator; a model trained on the reference formats reads the plain template (its QA text
    turn by turn) whatever its tokenizer offers; one trained in the chat text format, its tokenizer's."""
    cfg = loaded.cfg
    if not loaded.chat_trained and cfg.task.text_format != "chat":
        cfg = replace(cfg, task=replace(cfg.task, chat_template="plain", max_instances=None))
    return make_collator("chat", loaded.tokenizer, cfg, train=False,
                         tokens_per_instance=loaded.model.positions_per_instance, max_len=max_len)


def chat_batch(collator: ChatCollator, rows: list[tuple[list[dict[str, str]], list[tuple[str, torch.Tensor]]]]
               ) -> dict[str, Any]:
    """The chat layout of `rows` (messages ending with the user's turn, instances in placeholder order)."""
    items = [{"index": i, "uid": i, "prompt": messages[-1]["content"], "target": None, "skipped": None,
              "messages": [*messages, {"role": "assistant", "content": ""}],  # the turn to generate
              "instances": [{"modality": modality, "media": tensor} for modality, tensor in instances]}
             for i, (messages, instances) in enumerate(rows)]
    return collator(items)


def add_media_root_argument(parser) -> None:
    parser.add_argument("--media_root", default=".", metavar="DIR",
                        help="folder that relative media paths are read against (default: the current folder)")


def media_root_from_args(args) -> Path:
    """--media_root, checked to be a folder."""
    media_root = Path(args.media_root)
    if not media_root.is_dir():
        raise MissingFileError(f"--media_root {media_root}: no such folder")
    return media_root
