"""Exact-match QA accuracy after the VQA answer normalisation (GQA, MSRVTT-QA, MSVD-QA).

Both the prediction and the gold answers get the full normalisation of the official VQA evaluator
(punctuation, number words, articles, contractions, case). The gold side is a VL-T5 style `label`
dict `{answer: score}` or a single `answer` string (or an `answers` list). A prediction earns the
score of the gold answer it matches: 1.0 for an `answer` string and for the usual GQA / MSRVTT-QA
labels (whose one answer scores 1), the label's score otherwise, as the eP-ALM / VL-Adapter evaluators
credit it; the best one if it matches several.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from epalm.common.errors import DataFormatError
from epalm.dataset.metrics.answer_normalization import normalize_answer
from epalm.dataset.metrics.prediction_alignment import MissingPolicy, align, predictions_by_id
from epalm.dataset.metrics.qa_result import QAResult, summarize
from epalm.dataset.metrics.vqa_accuracy import human_answer_strings


def gold_answers(truth: Mapping[str, Any], where: str) -> dict[str, float]:
    """`{answer: credit}` from a ground-truth entry's `label`, `answer` or `answers` field."""
    label = truth.get("label")
    if label is not None:
        if not isinstance(label, Mapping) or not all(
            isinstance(answer, str) and isinstance(score, (int, float)) and not isinstance(score, bool)
            for answer, score in label.items()
        ):
            raise DataFormatError(f"{where}: 'label' must be an object {{answer: score}}, got {label!r:.80}")
        return {answer: float(score) for answer, score in label.items()}
    if isinstance(truth.get("answer"), str):
        return {truth["answer"]: 1.0}
    if truth.get("answers") is not None:
        return {answer: 1.0 for answer in human_answer_strings(truth["answers"], where)}
    raise DataFormatError(f"{where}: needs a 'label' object, an 'answer' string or an 'answers' list")


def answer_credit(prediction: str, gold: Mapping[str, float]) -> float:
    """The best credit among gold answers equal to the prediction once both are normalised (0 if none)."""
    predicted = normalize_answer(prediction)
    return max((score for answer, score in gold.items() if normalize_answer(answer) == predicted), default=0.0)


def exact_match_accuracy(
    predictions: Mapping[Any, str] | Iterable[Mapping[str, Any]],
    ground_truth: Mapping[Any, Mapping[str, Any]],
    missing: MissingPolicy = "ignore",
    source: str = "predictions",
) -> QAResult:
    """Exact-match accuracy in percent, overall and per question type / answer type where present.

    predictions: `{question_id: answer}` or `[{"question_id", "answer"}]`.
    ground_truth: `{question_id: {"label": {...}} or {"answer": ...}, optional "question_type",
        "answer_type"}`; a task reader's `Sample.meta` has this shape.
    """
    alignment = align(predictions_by_id(predictions, source), ground_truth.keys(), missing, source)
    scores, answer_types, question_types = {}, {}, {}
    for qid in alignment.ids:
        truth = ground_truth[qid]
        gold = gold_answers(truth, f"ground truth of question {qid!r}")
        predicted = alignment.predictions[str(qid)]
        scores[qid] = 0.0 if predicted is None else answer_credit(predicted, gold)
        answer_types[qid] = truth.get("answer_type")
        question_types[qid] = truth.get("question_type")
    return summarize("exact_match", scores, answer_types, question_types, alignment, missing)
