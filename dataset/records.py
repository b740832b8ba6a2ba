"""The one record every task reader yields, whatever the modality or source format."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One training or evaluation item.

    uid: the id predictions are reported under (VQA `question_id`, COCO `image_id`, a video or audio id).
    media: path of the image, video or audio file, relative to the task's media root.
    prompt: the text the LM is given before the target: the question for QA, "" for captioning.
    targets: what the LM should produce: the answers (QA) or the reference captions (captioning).
    target_weights: for VQA, the label score of each answer; training samples answers in proportion to it.
    meta: everything else evaluation needs (answer_type, question_type, image_id, ...).
    """

    uid: Any
    media: str
    prompt: str
    targets: list[str]
    target_weights: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
