"""The official VQA v2 accuracy (GT-Vision-Lab/VQA `vqaEval.py`), in its two published versions.

Per question: each of the human answers is left out in turn, the prediction earns
`min(1, matches among the others / 3)`, and the results are averaged (with 10 answers: 1 match 0.3,
2 matches 0.6, 3 matches 0.9, 4 or more 1.0). Leaving out "in turn" is by position: the official code
removes the one answer dict equal to it, which is one answer because every answer has its own answer_id.

- "2021" (default, the current official code, "Fixed processing answers bug", March 2021): newlines and
  tabs are cleaned on both sides; if the human answers are not all identical, both sides get the full
  normalisation; if they are, neither side is normalised at all.
- "2017" (the code eP-ALM, VL-T5 and LAVIS copy): the prediction always gets the full normalisation;
  the human answers get only the punctuation step, and only when they are not all identical.

The ground truth is only read, never modified (the official `evaluate()` overwrites the loaded answers,
so a second call on the same object scores differently).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from epalm.common.errors import ConfigError, DataFormatError
from epalm.dataset.metrics.answer_normalization import (
    clean_whitespace, normalize_answer, process_digits_articles, process_punctuation,
)
from epalm.dataset.metrics.prediction_alignment import MissingPolicy, align, predictions_by_id
from epalm.dataset.metrics.qa_result import QAResult, summarize
from epalm.dataset.tasks.annotation_file import entry_list, load_json, location, require

VQA_VERSIONS = ("2021", "2017")


def question_accuracy(prediction: str, human_answers: Sequence[str], version: str = "2021") -> float:
    """The VQA accuracy (0-1) of one prediction against the human answers of one question."""
    if not human_answers:
        raise ValueError("a VQA question needs at least one human answer")
    if version == "2017":
        predicted = normalize_answer(prediction)
        answers = list(human_answers)
        if len(set(answers)) > 1:
            answers = [process_punctuation(answer) for answer in answers]
    elif version == "2021":
        predicted = clean_whitespace(prediction)
        answers = [clean_whitespace(answer) for answer in human_answers]
        if len(set(answers)) > 1:
            answers = [process_digits_articles(process_punctuation(answer)) for answer in answers]
            predicted = normalize_answer(predicted)
    else:
        raise ConfigError(f"unknown VQA evaluator version {version!r}; expected one of {VQA_VERSIONS}")
    matches = answers.count(predicted)
    # Summed answer by answer, in order, as the official code does (same floating-point result).
    left_out_scores = [min(1.0, (matches - (answer == predicted)) / 3) for answer in answers]
    return sum(left_out_scores) / len(left_out_scores)


def human_answer_strings(answers: Any, where: str) -> list[str]:
    """Accept official answer dicts (`{"answer": ...}`) or plain strings; return the strings."""
    if not isinstance(answers, list) or not answers:
        raise DataFormatError(f"{where}: 'answers' must be a non-empty list of human answers (the official VQA "
                              "accuracy needs them: see docs/datasets.md, VQA v2)")
    out = []
    for answer in answers:
        text = answer.get("answer") if isinstance(answer, dict) else answer
        if not isinstance(text, str):
            raise DataFormatError(f"{where}: each human answer must be a string or an object with an 'answer' "
                                  f"string, got {answer!r:.80}")
        out.append(text)
    return out


def vqa_accuracy(
    predictions: Mapping[Any, str] | Iterable[Mapping[str, Any]],
    ground_truth: Mapping[Any, Mapping[str, Any]],
    version: str = "2021",
    missing: MissingPolicy = "ignore",
    source: str = "predictions",
) -> QAResult:
    """Official VQA accuracy in percent, overall, per answer type and per question type.

    predictions: `{question_id: answer}` or `[{"question_id", "answer"}]`.
    ground_truth: `{question_id: {"answers": [...], "answer_type": ..., "question_type": ...}}`; the
        answers are official answer dicts or strings; the two types are optional. A task reader's
        `Sample.meta` has this shape, so `{s.uid: s.meta for s in samples}` works.
    missing: what a ground-truth question with no prediction does (see prediction_alignment).
    """
    if version not in VQA_VERSIONS:
        raise ConfigError(f"unknown VQA evaluator version {version!r}; expected one of {VQA_VERSIONS}")
    alignment = align(predictions_by_id(predictions, source), ground_truth.keys(), missing, source)
    scores, answer_types, question_types = {}, {}, {}
    for qid in tqdm(alignment.ids, desc=f"VQA accuracy ({version})", disable=len(alignment.ids) < 50_000):
        truth = ground_truth[qid]
        answers = human_answer_strings(truth.get("answers"), f"ground truth of question {qid!r}")
        predicted = alignment.predictions[str(qid)]
        scores[qid] = 0.0 if predicted is None else question_accuracy(predicted, answers, version)
        answer_types[qid] = truth.get("answer_type")
        question_types[qid] = truth.get("question_type")
    return summarize("vqa_accuracy", scores, answer_types, question_types, alignment, missing, version)


def load_vqa_ground_truth(annotations_path: str | Path, questions_path: str | Path | None = None) -> dict:
    """Read official VQA annotations (and questions) into `{question_id: {"answers", "answer_type", ...}}`.

    With a questions file, the ground truth is the questions it lists (each must have an annotation),
    in its order; without one, every annotated question.
    """
    annotations = {}
    for index, entry in enumerate(entry_list(load_json(annotations_path), annotations_path, "annotations")):
        where = location(annotations_path, index, entry, "question_id")
        qid = require(entry, "question_id", (int, str), where)
        if qid in annotations:
            raise DataFormatError(f"{where}: question_id {qid!r} is annotated twice")
        annotations[qid] = {
            "answers": human_answer_strings(require(entry, "answers", list, where), where),
            "answer_type": require(entry, "answer_type", str, where),
            "question_type": require(entry, "question_type", str, where),
            "image_id": entry.get("image_id"),
        }
    if questions_path is None:
        return annotations
    ground_truth = {}
    for index, entry in enumerate(entry_list(load_json(questions_path), questions_path, "questions")):
        where = location(questions_path, index, entry, "question_id")
        qid = require(entry, "question_id", (int, str), where)
        if qid not in annotations:
            raise DataFormatError(f"{where}: no annotation for this question in {annotations_path}")
        image_id = entry.get("image_id")
        if image_id is not None and annotations[qid]["image_id"] not in (None, image_id):
            raise DataFormatError(f"{where}: image_id {image_id!r} differs from the annotation's "
                                  f"{annotations[qid]['image_id']!r} in {annotations_path}")
        ground_truth[qid] = {**annotations[qid], "question": entry.get("question")}
    return ground_truth
