"""Which metric a task is scored with, and the one number `--save_best` compares."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from epalm.common.errors import check_choice
from epalm.dataset.metrics.attribute_accuracy import attribute_accuracy
from epalm.dataset.metrics.caption_metrics import caption_metrics
from epalm.dataset.metrics.exact_match import exact_match_accuracy
from epalm.dataset.metrics.vqa_accuracy import vqa_accuracy
from epalm.dataset.tasks.task_split import TaskSplit

DEFAULT_METRIC = {"vqa_v2": "vqa", "gqa": "exact_match", "video_qa": "exact_match"}
METRICS = ("vqa", "exact_match", "caption")


def metric_name(reader: str, kind: str, configured: str) -> str:
    name = configured or DEFAULT_METRIC.get(reader, "caption" if kind == "caption" else "exact_match")
    check_choice("task.metric", name, METRICS)
    return name


def metric_reason(reader: str, split: TaskSplit, configured: str) -> tuple[str, str]:
    """(the main metric's name as the results report it, why it was chosen): the console says both at the start of
    a split's first evaluation, and the metrics file keeps the reason."""
    metric = metric_name(reader, split.kind, configured)
    why = "task.metric" if configured else ""
    if metric == "caption":
        return "CIDEr", why or ("captions: CIDEr against each item's reference captions; BLEU, METEOR and ROUGE-L "
                                "are in the metrics file")
    if metric == "vqa":
        if has_human_answers(split):
            return "vqa_accuracy", why or "VQA accuracy: every question has its human `answers`"
        return "exact_match", ("VQA accuracy needs each question's 10 human `answers` (an `answers` field, or the "
                               "official annotation files beside the questions); without them, exact match against "
                               "`label` / `answer`: docs/datasets.md")
    if split.kind == "chat":
        return "exact_match", why or "chat rows: the last assistant turn, after the VQA answer normalisation"
    return "exact_match", why or f"the {reader} reader's metric"


def attribute_vocabulary(split: TaskSplit) -> dict | None:
    """The synthetic worlds' caption attribute vocabulary: in the annotation file or beside it."""
    data = json.loads(Path(split.annotation_file).read_text())
    if isinstance(data, dict) and "attribute_vocabulary" in data:
        return data["attribute_vocabulary"]
    sibling = Path(split.annotation_file).with_name("attribute_vocabulary.json")
    return json.loads(sibling.read_text()) if sibling.is_file() else None


def has_human_answers(split: TaskSplit) -> bool:
    """Every question has its human `answers`: VQA accuracy can score it (else exact match)."""
    return all("answers" in sample.meta for sample in split)


def _with_answer(meta: dict[str, Any], targets: list[str]) -> dict[str, Any]:
    """A chat row's gold answer is its last assistant turn (QA readers keep theirs in `label` / `answer`)."""
    if any(key in meta for key in ("label", "answer", "answers")) or not targets:
        return meta
    return {**meta, "answer": targets[0]}


def score_predictions(split: TaskSplit, predictions: dict[Any, str], metric: str, vqa_version: str) -> dict[str, Any]:
    """Metrics as a JSON-ready dict with a `main` entry: VQA / exact-match accuracy (percent) or CIDEr."""
    if metric == "caption":
        references = {s.uid: s.targets for s in split}
        result = caption_metrics(predictions, references).to_dict()
        result["main"] = {"name": "CIDEr", "value": result["scores"].get("CIDEr")}
        vocabulary = attribute_vocabulary(split)
        if vocabulary is not None and all("attributes" in s.meta for s in split):
            attributes = {s.uid: s.meta["attributes"] for s in split if s.uid in predictions}
            result["attribute_accuracy"] = attribute_accuracy(predictions, attributes, vocabulary)
        return result
    truth = {s.uid: _with_answer(s.meta, s.targets) for s in split}
    if metric == "vqa" and has_human_answers(split):  # _with_answer leaves `answers` as they are
        result = vqa_accuracy(predictions, truth, version=vqa_version).to_dict()
    else:
        result = exact_match_accuracy(predictions, truth).to_dict()
        if metric == "vqa":  # no human answers: VL-T5's soft score from the label dict
            result["note"] = "official VQA annotation files absent: scored against the label scores"
    result["main"] = {"name": result["metric"], "value": result["overall"]}
    return result
