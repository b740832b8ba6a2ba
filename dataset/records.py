"""The one record every task reader yields, whatever the modality or source format."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MediaItem:
    """One media instance: its modality (a registered plugin, models/modalities) and its file path."""

    modality: str
    path: str


@dataclass
class Sample:
    """One training or evaluation item.

    uid: the id predictions are reported under (VQA `question_id`, COCO `image_id`, a video or audio id).
    media: path of the image, video or audio file, relative to the task's media root ("" for chat rows,
        whose instances are in `items`).
    prompt: the text the LM is given before the target: the question for QA, "" for captioning, the last
        user message for chat rows.
    targets: what the LM should produce: the answers (QA), the reference captions (captioning), the last
        assistant message (chat rows).
    target_weights: for VQA, the label score of each answer; training samples answers in proportion to it.
    meta: everything else evaluation needs (answer_type, question_type, image_id, ...).
    items: the media instances of a chat row, in the order their placeholders appear in the messages.
    messages: a chat row's conversation, `[{"role": "user" | "assistant" | "system", "content": ...}]`.
    """

    uid: Any
    media: str
    prompt: str
    targets: list[str]
    target_weights: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    items: list[MediaItem] = field(default_factory=list)
    messages: list[dict[str, str]] | None = None


def media_items(sample: Sample, modality: str) -> list[MediaItem]:
    """The sample's instances: a chat row's `items`, or its one `media` file of the split's modality."""
    if sample.items:
        return list(sample.items)
    return [MediaItem(modality, sample.media)] if sample.media else []
