"""One VL-T5 / VL-Adapter style QA entry (VQA v2, GQA, MSRVTT-QA, MSVD-QA) -> one Sample.

Entry fields: `question_id`, the question in `sent` (or `question`), the answers as a `label`
`{answer: score}` (or one `answer` string, or only the human `answers`: each distinct one weighted by how many
gave it); test files may have none (the Sample then has no targets). Sample.meta keeps every field of the entry except the question text (label, answer_type,
question_type, img_id, and any extra field such as the synthetic data's `attributes`).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from epalm.common.errors import DataFormatError
from epalm.dataset.records import Sample
from epalm.dataset.tasks.annotation_file import require


def _answers(entry: dict, where: str) -> tuple[list[str], list[float] | None]:
    """Targets sorted by label score (highest first, file order on ties) and their scores."""
    if "label" in entry:
        label = require(entry, "label", dict, where)
        for answer, score in label.items():
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise DataFormatError(f"{where}: field 'label' must map answers to numbers; "
                                      f"{answer!r} has {type(score).__name__} {score!r:.40}")
        ranked = sorted(label.items(), key=lambda item: -item[1])
        return [answer for answer, _ in ranked], [float(score) for _, score in ranked]
    if "answer" in entry:
        return [require(entry, "answer", str, where)], [1.0]
    if "answers" in entry:  # only the human answers (a user's own VQA file): each in proportion to its count
        given = require(entry, "answers", list, where)
        texts = [a.get("answer") if isinstance(a, dict) else a for a in given]
        if not texts or not all(isinstance(text, str) for text in texts):
            raise DataFormatError(f"{where}: field 'answers' must list answer strings or {{\"answer\": ...}} objects")
        counts = Counter(texts)
        return [text for text, _ in counts.most_common()], [float(n) for _, n in counts.most_common()]
    return [], None


def qa_sample(entry: Any, where: str, media: str, extra_meta: dict[str, Any] | None = None) -> Sample:
    """Check one QA entry and turn it into a Sample whose uid is its question_id."""
    question_id = require(entry, "question_id", (int, str), where)
    if "sent" not in entry and "question" not in entry:
        raise DataFormatError(f"{where}: missing the question: field 'sent' or 'question' (a string)")
    question = require(entry, "sent" if "sent" in entry else "question", str, where)
    targets, weights = _answers(entry, where)
    meta = {key: value for key, value in entry.items() if key not in ("sent", "question")}
    meta.update(extra_meta or {})
    return Sample(uid=question_id, media=media, prompt=question, targets=targets, target_weights=weights, meta=meta)
