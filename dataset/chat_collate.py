"""Batches of chat rows: rendered messages, each media placeholder expanded into its instance's positions.

Each placeholder (`<image>`, `<audio>` ...) becomes its modality's positions per instance (1 slot for eP-ALM layer
injection, N input tokens for the prefix and MLP connectors, 0 for a blind model) marked in `media_index` with the
instance's rows (models/media_instances.py: instances numbered modality by modality in `instance_order`);
their token id is the pad id and they carry no label. The loss reads the assistant turns only.
Training batches are right-padded; evaluation batches hold the conversation up to the last assistant turn,
left-padded for generation.
"""
from __future__ import annotations

from typing import Any

import torch

from epalm.dataset.chat_template import chat_segments
from epalm.dataset.tasks.chat_messages import placeholder_pattern
from epalm.models.media_instances import instance_order
from epalm.models.modalities import placeholders


class ChatCollator:
    def __init__(self, tokenizer, train: bool, tokens_per_instance: int | dict[str, int], template: str = "auto",
                 max_len: int = 64, max_instances: int | None = None):
        """tokens_per_instance: the positions of one instance, of every modality or `{modality: positions}` (the
        model's `positions_per_instance`). max_instances: keep only the first n instances of each row (the
        others' placeholders get no positions): the "first instance only" ablation."""
        self.tokenizer = tokenizer
        self.train = train
        self.widths = tokens_per_instance
        self.template = template
        self.max_len = max_len
        self.max_instances = max_instances
        self.pad_id = tokenizer.pad_token_id
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pattern = placeholder_pattern()
        self.owners = placeholders()

    # --- one row -> pieces -------------------------------------------------------------------------------
    def _pieces(self, item: dict[str, Any]) -> list[tuple[str, Any]]:
        """("text", (string, supervised)) and ("media", k) pieces in order: k-th instance of the row."""
        pieces: list[tuple[str, Any]] = []
        count = 0
        for text, supervised in chat_segments(item["messages"], self.tokenizer, self.template, not self.train):
            start = 0
            for match in self.pattern.finditer(text):
                pieces.append(("text", (text[start : match.start()], supervised)))
                pieces.append(("media", count))
                count += 1
                start = match.end()
            pieces.append(("text", (text[start:], supervised)))
        return pieces

    def width(self, modality: str) -> int:
        """Positions one instance of `modality` takes."""
        return self.widths if isinstance(self.widths, int) else self.widths.get(modality, 0)

    def _keeps(self, item: dict[str, Any], k: int) -> bool:
        return (not item["skipped"] and self.width(item["instances"][k]["modality"]) > 0
                and (self.max_instances is None or k < self.max_instances))

    # --- batch -------------------------------------------------------------------------------------------
    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        skipped = [item["skipped"] for item in items if item["skipped"]]
        if self.train:
            items = [item for item in items if not item["skipped"]]
        pieces = [self._pieces(item) for item in items]
        texts = [value[0] for row in pieces for kind, value in row if kind == "text"]
        encoded = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
        rows, labels, slots = [], [], []
        media: dict[str, list[torch.Tensor]] = {}
        kept: list[list[tuple[str, int]]] = []  # per row: (modality, row within its modality stack)
        for item, row_pieces in zip(items, pieces):
            ids, label, index = [], [], []
            row_kept = []
            for kind, value in row_pieces:
                if kind == "text":
                    tokens = next(encoded)
                    supervised = value[1]
                    ids += tokens
                    label += tokens if supervised and self.train else [-100] * len(tokens)
                    index += [-1] * len(tokens)
                elif self._keeps(item, value):
                    instance = item["instances"][value]
                    tensor = instance.get("features", instance.get("media"))
                    if tensor is None:  # a blind model's instance: no tokens
                        continue
                    stack = media.setdefault(instance["modality"], [])
                    row_kept.append((instance["modality"], len(stack)))
                    stack.append(tensor)
                    width = self.width(instance["modality"])
                    ids += [self.pad_id] * width
                    label += [-100] * width
                    index += [len(row_kept) - 1] * width  # local for now; numbered across the batch below
            if not ids or ids[0] != self.start_id:
                ids, label, index = [self.start_id] + ids, [-100] + label, [-1] + index
            rows.append(ids[: self.max_len])
            labels.append(label[: self.max_len])
            slots.append(index[: self.max_len])
            kept.append(row_kept)
        media_index = self._number_instances(slots, kept, media)
        batch: dict[str, Any] = {
            "uids": [item["uid"] for item in items],
            "indices": [item["index"] for item in items],
            "valid": torch.tensor([not item["skipped"] for item in items], dtype=torch.bool),
            "skipped": skipped,
        }
        batch.update(_pad(rows, labels if self.train else None, media_index, self.pad_id, left=not self.train))
        key = "features" if any("features" in i for item in items for i in item.get("instances", [])) else "media"
        if media:
            batch[key] = {modality: torch.stack(stack) for modality, stack in media.items()}
        return batch

    def _number_instances(self, slots: list[list[int]], kept: list[list[tuple[str, int]]],
                          media: dict[str, list[torch.Tensor]]) -> list[list[int]]:
        """Local instance numbers -> the rows of the instance's positions across the batch: the modalities'
        instances in `instance_order`, each instance's W rows in turn (`i * W + j` when every W is the same)."""
        offsets, total = {}, 0
        for modality in instance_order(media):
            offsets[modality] = total
            total += len(media[modality]) * self.width(modality)
        numbered = []
        for index, row_kept in zip(slots, kept):
            out, previous, j = [], None, 0
            for value in index:
                if value < 0:
                    out.append(-1)
                    previous = None
                    continue
                j = j + 1 if value == previous else 0
                modality, row = row_kept[value]
                out.append(offsets[modality] + row * self.width(modality) + j)
                previous = value
            numbered.append(out)
        return numbered


def _pad(rows: list[list[int]], labels: list[list[int]] | None, media_index: list[list[int]], pad_id: int,
         left: bool) -> dict[str, torch.Tensor]:
    width = max((len(r) for r in rows), default=1)

    def padded(values: list[list[int]], fill: int) -> torch.Tensor:
        pad = [[fill] * (width - len(v)) for v in values]
        table = [p + v if left else v + p for p, v in zip(pad, values)]
        return torch.tensor(table, dtype=torch.long).reshape(len(values), width)

    out = {"input_ids": padded(rows, pad_id), "attention_mask": padded([[1] * len(r) for r in rows], 0),
           "media_index": padded(media_index, -1)}
    if labels is not None:
        out["labels"] = padded(labels, -100)
    return out
