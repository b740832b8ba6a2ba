"""VQA v2 files for generated images: the VL-T5 Karpathy-split lists and the official questions/annotations."""
from __future__ import annotations

from collections.abc import Iterable

from epalm.demo.synthetic.items import SceneItem

# Every synthetic answer is unambiguous, so all ten "annotators" give it.
ANNOTATORS = 10


def karpathy_entries(items: Iterable[SceneItem]) -> list[dict]:
    """VL-T5 format: one entry per question, label {answer: score}."""
    return [
        {"img_id": item.img_id, "sent": qa.question, "question_id": item.question_id(k),
         "label": {qa.answer: 1.0}, "answer_type": qa.answer_type, "question_type": qa.question_type}
        for item in items for k, qa in enumerate(item.qas)
    ]


def answer_vocabulary(items: Iterable[SceneItem]) -> dict[str, int]:
    """`trainval_ans2label.json`: answer -> class index, in sorted order."""
    answers = sorted({qa.answer for item in items for qa in item.qas})
    return {answer: index for index, answer in enumerate(answers)}


def _header(subtype: str) -> dict:
    return {"info": {"description": "synthetic image world (eP-ALM demo)", "version": "1.0"},
            "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype, "license": {}}


def official_questions(items: Iterable[SceneItem], subtype: str) -> dict:
    """Official `v2_OpenEnded_mscoco_<subtype>_questions.json` layout."""
    return {**_header(subtype), "questions": [
        {"question_id": item.question_id(k), "image_id": item.cocoid, "question": qa.question}
        for item in items for k, qa in enumerate(item.qas)
    ]}


def official_annotations(items: Iterable[SceneItem], subtype: str) -> dict:
    """Official `v2_mscoco_<subtype>_annotations.json` layout, ten identical human answers per question."""
    return {**_header(subtype), "annotations": [
        {"question_id": item.question_id(k), "image_id": item.cocoid, "answer_type": qa.answer_type,
         "question_type": qa.question_type, "multiple_choice_answer": qa.answer,
         "answers": [{"answer": qa.answer, "answer_confidence": "yes", "answer_id": i + 1}
                     for i in range(ANNOTATORS)]}
        for item in items for k, qa in enumerate(item.qas)
    ]}
