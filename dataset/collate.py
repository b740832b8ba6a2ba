"""Batches of token ids for the LM, in the reference's text formats.

QA: the prompt template filled with the question (default `question + "</a>"`, dataset/prompt_template.py),
then `answer + eos`; captioning: `caption + eos`; the tokenizer's BOS comes first. Training batches are
right-padded and carry labels; evaluation batches hold the prompt alone (the filled template, or BOS for
captions), left-padded for generation by default (batch-independent answers), or right-padded as the
reference tokenizes them (`padding_side="right"`, to score its released checkpoints as published).

`text_format="chat"` (an instruct LM): the same sample as a one-turn conversation through the tokenizer's chat
template instead: the user turn is the filled prompt template (QA) or `caption_prompt`, the assistant turn the
answer or caption (dataset/chat_template.py:one_turn). The media stay where the one-instance layout puts them,
before the text, as DMI's and linear-modality-alignment's models read them.
"""
from __future__ import annotations

from typing import Any

import torch

from epalm.common.errors import ConfigError, check_choice, did_you_mean
from epalm.dataset.chat_template import TEXT_FORMATS, one_turn
from epalm.dataset.prompt_template import DEFAULT_QA_TEMPLATE, check_prompt_template, fill_prompt_template

LOSS_TOKENS = ("answer", "all")
PADDING_SIDES = ("left", "right")
DEFAULT_CAPTION_PROMPT = "Write a short caption."


def prompt_text(kind: str, prompt: str, template: str = DEFAULT_QA_TEMPLATE) -> str:
    return fill_prompt_template(template, prompt) if kind == "qa" else prompt


class TextCollator:
    def __init__(self, tokenizer, kind: str, train: bool, loss_tokens: str = "answer", max_len: int = 64,
                 prompt_template: str = DEFAULT_QA_TEMPLATE, padding_side: str = "left", text_format: str = "reference",
                 caption_prompt: str = DEFAULT_CAPTION_PROMPT):
        """prompt_template: the QA prompt (QA only); padding_side: of evaluation batches (training is right-padded);
        text_format: "reference" or "chat" (the tokenizer's chat template); caption_prompt: the user turn of a
        caption sample in the chat format."""
        check_choice("task.text_format", text_format, TEXT_FORMATS)
        self.chat, self.caption_prompt = text_format == "chat", caption_prompt
        if loss_tokens not in LOSS_TOKENS:
            raise ConfigError(f"train.loss_tokens '{loss_tokens}' is not one of {LOSS_TOKENS}"
                              f"{did_you_mean(loss_tokens, LOSS_TOKENS)}")
        if kind not in ("qa", "caption"):
            raise ValueError(f"task kind '{kind}' is not qa or caption")
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side '{padding_side}' is not one of {PADDING_SIDES}")
        self.prompt_template = check_prompt_template(prompt_template)
        self.padding_side = padding_side
        self.tokenizer = tokenizer
        self.kind = kind
        self.train = train
        self.loss_tokens = loss_tokens
        self.max_len = max_len
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        # A tokenizer that adds no BOS (GPT-2) still needs one position to start a caption from.
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    # One tokenizer call per batch, not per sample: the fast tokenizers encode a list in one Rust call.
    def _prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        if not prompts:
            return []
        if self.chat:  # the rendered conversation carries the template's own special tokens (BOS, if any)
            texts = [one_turn(self.tokenizer, self._user_turn(p), None)[0] for p in prompts]
            return self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        texts = [prompt_text(self.kind, p, self.prompt_template) for p in prompts]
        encoded = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        return [ids if ids and ids[0] == self.start_id else [self.start_id] + ids for ids in encoded]

    def _target_ids(self, targets: list[str]) -> list[list[int]]:
        if not targets:
            return []
        return [ids + [self.eos_id] for ids in self.tokenizer(targets, add_special_tokens=False)["input_ids"]]

    def _chat_ids(self, prompts: list[str], targets: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """One rendering per sample: the prompt up to the template's generation prompt (its own special tokens,
        BOS if any) and the answer as the template writes it, its end of turn included."""
        if not prompts:
            return [], []
        turns = [one_turn(self.tokenizer, self._user_turn(p), t) for p, t in zip(prompts, targets)]
        prompt_ids = self.tokenizer([prompt for prompt, _ in turns], add_special_tokens=False)["input_ids"]
        answer_ids = self.tokenizer([answer for _, answer in turns], add_special_tokens=False)["input_ids"]
        return prompt_ids, answer_ids

    def _user_turn(self, prompt: str) -> str:
        return fill_prompt_template(self.prompt_template, prompt) if self.kind == "qa" else self.caption_prompt

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        skipped = [item["skipped"] for item in items if item["skipped"]]
        if self.train:
            items = [item for item in items if not item["skipped"]]
        batch: dict[str, Any] = {
            "uids": [item["uid"] for item in items],
            "indices": [item["index"] for item in items],
            "valid": torch.tensor([not item["skipped"] for item in items], dtype=torch.bool),
            "skipped": skipped,
        }
        batch.update(self._train_text(items) if self.train else self._prompt_text(items))
        for key in ("media", "features"):
            tensors = [item.get(key) for item in items]
            present = [t for t in tensors if t is not None]
            if present:
                # An evaluation row whose media failed keeps a zero placeholder (its prediction is dropped).
                batch[key] = torch.stack([t if t is not None else torch.zeros_like(present[0]) for t in tensors])
        return batch

    def _train_text(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows, labels = [], []
        prompt_texts, target_texts = [item["prompt"] for item in items], [item["target"] for item in items]
        if self.chat:
            prompts, targets = self._chat_ids(prompt_texts, target_texts)
        else:
            prompts, targets = self._prompt_ids(prompt_texts), self._target_ids(target_texts)
        for prompt, target in zip(prompts, targets):
            ids = (prompt + target)[: self.max_len]
            if self.loss_tokens == "answer":
                label = ([-100] * len(prompt) + target)[: self.max_len]
            else:
                label = list(ids)
            rows.append(ids)
            labels.append(label)
        return self._pad(rows, labels, left=False)

    def _prompt_text(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = self._prompt_ids([item["prompt"] for item in items])
        return self._pad([ids[: self.max_len] for ids in prompts], None, left=self.padding_side == "left")

    def _pad(self, rows: list[list[int]], labels: list[list[int]] | None, left: bool) -> dict[str, torch.Tensor]:
        width = max((len(r) for r in rows), default=1)

        def padded(values: list[list[int]], fill: int) -> torch.Tensor:
            # One tensor from padded lists: far cheaper than a tensor per row written into a batch.
            pad = [[fill] * (width - len(v)) for v in values]
            table = [p + v if left else v + p for p, v in zip(pad, values)]
            return torch.tensor(table, dtype=torch.long).reshape(len(values), width)

        out = {"input_ids": padded(rows, self.pad_id), "attention_mask": padded([[1] * len(r) for r in rows], 0)}
        if labels is not None:
            out["labels"] = padded(labels, -100)
        return out
