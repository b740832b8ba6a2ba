"""Pair predictions with ground truth by id, with one policy for missing and unknown ids.

Ids are compared as strings, so a prediction for 123 matches ground truth keyed "123" (JSON files and
Python code disagree on int vs str ids); "0123" and 123 do not match.

- A prediction for an id the ground truth does not know is an error (a wrong annotation file or split).
- A ground-truth id with no prediction is "missing". `missing` decides what happens to it:
  "ignore" (default) scores only the predicted ids and reports the count, "zero" counts it as wrong,
  "error" raises (what the official VQA evaluator does).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from epalm.common.errors import ConfigError, DataFormatError

MissingPolicy = Literal["ignore", "zero", "error"]
MISSING_POLICIES = ("ignore", "zero", "error")
_SHOWN_IDS = 10


@dataclass
class Alignment:
    """Ground-truth ids to score (in ground-truth order), with the prediction of each (None if missing)."""

    ids: list[Any]
    predictions: dict[str, str | None]
    missing_ids: list[Any] = field(default_factory=list)


def predictions_by_id(
    predictions: Mapping[Any, str] | Iterable[Mapping[str, Any]],
    source: str = "predictions",
    id_key: str = "question_id",
    text_key: str = "answer",
) -> dict[str, str]:
    """Accept `{id: text}` or `[{id_key: id, text_key: text}]`; return `{str(id): text}`; reject bad entries."""
    if isinstance(predictions, Mapping):
        entries = [{id_key: key, text_key: value} for key, value in predictions.items()]
    else:
        entries = list(predictions)
    by_id: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = f"{source}: entry {index}"
        if not isinstance(entry, Mapping):
            raise DataFormatError(f"{where}: expected an object with '{id_key}' and '{text_key}', "
                                  f"got {type(entry).__name__}")
        for key in (id_key, text_key):
            if key not in entry:
                raise DataFormatError(f"{where}: missing field '{key}'")
        if not isinstance(entry[text_key], str):
            raise DataFormatError(f"{where} ({id_key}={entry[id_key]!r}): '{text_key}' must be a string, "
                                  f"got {type(entry[text_key]).__name__}")
        key = str(entry[id_key])
        if key in by_id:
            raise DataFormatError(f"{where}: duplicate prediction for {id_key}={entry[id_key]!r}")
        by_id[key] = entry[text_key]
    return by_id


def align(
    predictions: dict[str, str],
    ground_truth_ids: Iterable[Any],
    missing: MissingPolicy = "ignore",
    source: str = "predictions",
) -> Alignment:
    """Check ids both ways and apply the missing policy (see the module docstring)."""
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    gt_ids = list(ground_truth_ids)
    known = {str(gt_id) for gt_id in gt_ids}
    unknown = [key for key in predictions if key not in known]
    if unknown:
        raise DataFormatError(f"{source}: {len(unknown)} prediction(s) for ids absent from the ground truth "
                              f"(wrong annotation file or split?), e.g. {unknown[:_SHOWN_IDS]}")
    missing_ids = [gt_id for gt_id in gt_ids if str(gt_id) not in predictions]
    if missing_ids:
        message = (f"{source}: {len(missing_ids)} of {len(gt_ids)} ground-truth ids have no prediction, "
                   f"e.g. {missing_ids[:_SHOWN_IDS]}")
        if missing == "error":
            raise DataFormatError(message)
        warnings.warn(message + (" (scored as wrong)" if missing == "zero" else " (left out of the score)"),
                      stacklevel=3)
    ids = gt_ids if missing == "zero" else [gt_id for gt_id in gt_ids if str(gt_id) in predictions]
    if not ids:
        raise DataFormatError(f"{source}: nothing to score (no predictions, or an empty ground truth)")
    return Alignment(ids=ids, predictions={str(i): predictions.get(str(i)) for i in ids}, missing_ids=missing_ids)
