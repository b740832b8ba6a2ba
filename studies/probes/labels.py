"""Per-media-item attribute labels of a task split, for the projection probes (studies/probes/command.py).

Two sources, in this order of preference:
- `meta["attributes"]` of a sample (`{attribute: value}`): the synthetic caption files carry every
  attribute of each scene there (COCO `dataset_coco.json` images, MSR-VTT and AudioCaps entries);
- the questions of a QA split: `question_type` names the attribute and the top answer is its value
  (the synthetic VQA v2 and MSRVTT-QA files). A question type whose answers disagree on one media
  item (e.g. the image world's "exist" questions: "is there anything red?" and "is there a square?"
  about the same image) is not an attribute of the media and is left out, with the reason.

Media items are deduplicated (a VQA image has several questions); an attribute may label only some of
them (a VQA image is asked about some question types only).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from epalm.common.errors import DataFormatError, did_you_mean
from epalm.dataset.tasks.task_split import TaskSplit


@dataclass
class MediaLabels:
    """media: every media item of the split once, in first-seen order.
    labels: attribute -> {media: value}, only the items whose value is known.
    dropped: attribute -> why it is not probed."""

    media: list[str]
    labels: dict[str, dict[str, str]]
    dropped: dict[str, str] = field(default_factory=dict)
    source: str = ""  # "attributes" or "questions"


def _from_attributes(split: TaskSplit) -> MediaLabels:
    labels: dict[str, dict[str, str]] = {}
    for sample in split:
        attributes = sample.meta.get("attributes")
        if not isinstance(attributes, dict):
            raise DataFormatError(f"{split.annotation_file}: sample {sample.uid!r} has no 'attributes' object "
                                  f"although other samples of the split do")
        for name, value in attributes.items():
            known = labels.setdefault(name, {}).setdefault(sample.media, str(value))
            if known != str(value):
                raise DataFormatError(f"{split.annotation_file}: media {sample.media} has two values of attribute "
                                      f"'{name}': {known!r} and {value!r}")
    return MediaLabels(_unique_media(split), labels, source="attributes")


def _from_questions(split: TaskSplit) -> MediaLabels:
    answers: dict[str, dict[str, set[str]]] = {}
    for sample in split:
        question_type = sample.meta.get("question_type")
        if question_type is None or not sample.targets:
            continue
        answers.setdefault(str(question_type), {}).setdefault(sample.media, set()).add(sample.targets[0])
    labels, dropped = {}, {}
    for name, by_media in answers.items():
        conflicting = [media for media, values in by_media.items() if len(values) > 1]
        if conflicting:
            dropped[name] = (f"answers differ on one media item ({len(conflicting)} items, e.g. {conflicting[0]}): "
                             f"the question type is not an attribute of the media")
        else:
            labels[name] = {media: next(iter(values)) for media, values in by_media.items()}
    return MediaLabels(_unique_media(split), labels, dropped, source="questions")


def _unique_media(split: TaskSplit) -> list[str]:
    return list(dict.fromkeys(sample.media for sample in split))


def media_labels(split: TaskSplit, attributes: list[str] | None = None, min_per_class: int = 2) -> MediaLabels:
    """The split's attribute labels (see the module docstring); `attributes` keeps only those names.

    An attribute with one value only, or a value seen fewer than `min_per_class` times, cannot be probed
    with held-out items and is dropped with the reason."""
    if any(isinstance(sample.meta.get("attributes"), dict) for sample in split):
        found = _from_attributes(split)
    else:
        found = _from_questions(split)
    if not found.labels and not found.dropped:
        raise DataFormatError(f"{split.annotation_file}: no per-sample attribute labels: expected an 'attributes' "
                              f"object per entry (caption files) or 'question_type' and an answer (QA files)")
    if attributes:
        unknown = [name for name in attributes if name not in found.labels]
        if unknown:
            raise DataFormatError(f"{split.annotation_file}: no labels for attribute(s) {unknown}"
                                  f"{did_you_mean(unknown[0], found.labels)}; this split has {sorted(found.labels)}"
                                  + (f" (left out: {sorted(found.dropped)})" if found.dropped else ""))
        found.labels = {name: found.labels[name] for name in attributes}
    for name in list(found.labels):
        counts: dict[str, int] = {}
        for value in found.labels[name].values():
            counts[value] = counts.get(value, 0) + 1
        if len(counts) < 2:
            found.dropped[name] = f"one value only ({next(iter(counts))!r})"
        elif min(counts.values()) < min_per_class:
            rare = min(counts, key=counts.get)
            found.dropped[name] = f"value {rare!r} labels {counts[rare]} item(s), fewer than {min_per_class}"
        else:
            continue
        del found.labels[name]
    return found
