"""Batches of token ids for the LM, in the reference's text formats.

QA: `question + "</a>" + answer + eos`; captioning: `caption + eos`; the tokenizer's BOS comes first.
Training batches are right-padded and carry labels; evaluation batches hold the prompt alone
(`question + "</a>"`, or BOS for captions), left-padded for generation.
"""
from __future__ import annotations

from typing import Any

import torch

from models.language_model import QA_SEPARATOR

LOSS_TOKENS = ("answer", "all")


def prompt_text(kind: str, prompt: str) -> str:
    return prompt + QA_SEPARATOR if kind == "qa" else prompt


class TextCollator:
    def __init__(self, tokenizer, kind: str, train: bool, loss_tokens: str = "answer", max_len: int = 64):
        if loss_tokens not in LOSS_TOKENS:
            raise ValueError(f"loss_tokens '{loss_tokens}' is not one of {LOSS_TOKENS}")
        if kind not in ("qa", "caption"):
            raise ValueError(f"task kind '{kind}' is not qa or caption")
        self.tokenizer = tokenizer
        self.kind = kind
        self.train = train
        self.loss_tokens = loss_tokens
        self.max_len = max_len
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        # A tokenizer that adds no BOS (GPT-2) still needs one position to start a caption from.
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def _prompt_ids(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt_text(self.kind, prompt), add_special_tokens=True)["input_ids"]
        if not ids or ids[0] != self.start_id:
            ids = [self.start_id] + ids
        return ids

    def _target_ids(self, target: str) -> list[int]:
        return self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.eos_id]

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
        for item in items:
            prompt = self._prompt_ids(item["prompt"])
            target = self._target_ids(item["target"])
            ids = (prompt + target)[: self.max_len]
            if self.loss_tokens == "answer":
                label = ([-100] * len(prompt) + target)[: self.max_len]
            else:
                label = list(ids)
            rows.append(ids)
            labels.append(label)
        return self._pad(rows, labels, left=False)

    def _prompt_text(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self._pad([self._prompt_ids(item["prompt"])[: self.max_len] for item in items], None, left=True)

    def _pad(self, rows: list[list[int]], labels: list[list[int]] | None, left: bool) -> dict[str, torch.Tensor]:
        width = max((len(r) for r in rows), default=1)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        label_tensor = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
            if labels is not None:
                label_tensor[i, span] = torch.tensor(labels[i], dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": mask}
        if labels is not None:
            out["labels"] = label_tensor
        return out
