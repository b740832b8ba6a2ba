"""The result of a QA accuracy metric: percentages overall and per answer / question type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from epalm.dataset.metrics.prediction_alignment import Alignment

_SHOWN_IDS = 10


@dataclass
class QAResult:
    """Accuracy in percent (0-100), overall and per group, with what was and was not scored."""

    metric: str
    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[Any, float]
    num_scored: int
    num_missing: int
    missing_policy: str
    missing_ids: list[Any] = field(default_factory=list)
    version: str | None = None

    def to_dict(self, per_question: bool = False) -> dict[str, Any]:
        out = {
            "metric": self.metric, "version": self.version, "overall": self.overall,
            "per_answer_type": self.per_answer_type, "per_question_type": self.per_question_type,
            "num_scored": self.num_scored, "num_missing": self.num_missing,
            "missing_policy": self.missing_policy, "missing_ids_sample": self.missing_ids[:_SHOWN_IDS],
        }
        if per_question:
            out["per_question"] = {str(key): value for key, value in self.per_question.items()}
        return out


def _mean_percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values)


def _per_group(scores: dict[Any, float], group_of: dict[Any, str | None]) -> dict[str, float]:
    buckets: dict[str, list[float]] = {}
    for qid, score in scores.items():
        if group_of.get(qid) is not None:
            buckets.setdefault(str(group_of[qid]), []).append(score)
    return {group: _mean_percent(values) for group, values in sorted(buckets.items())}


def summarize(metric: str, scores: dict[Any, float], answer_types: dict[Any, str | None],
              question_types: dict[Any, str | None], alignment: Alignment, missing: str,
              version: str | None = None) -> QAResult:
    """Average per-question scores (0-1) into percentages, overall and per answer / question type."""
    return QAResult(
        metric=metric, version=version, overall=_mean_percent(list(scores.values())),
        per_answer_type=_per_group(scores, answer_types), per_question_type=_per_group(scores, question_types),
        per_question={qid: 100.0 * score for qid, score in scores.items()},
        num_scored=len(scores), num_missing=len(alignment.missing_ids), missing_policy=missing,
        missing_ids=alignment.missing_ids,
    )
