"""Caption attribute accuracy: the share of a scene's ground-truth attributes that a generated caption states right.

CIDEr on template captions rewards a blind model's one generic caption (demo-notes.md); this counts what the
caption gets right instead. It is generic over the synthetic worlds: each world supplies its vocabulary.

Matching rule, per caption and per attribute:
1. The caption is lowercased and split into words (runs of letters and digits; punctuation separates words).
2. Each surface phrase of each value (also split into words) is found wherever its words occur consecutively,
   so "red" matches "red" and "red," but never "reddish", and "a red" matches only those two words in a row.
3. Overlapping matches of the same attribute keep the longest phrase (then the leftmost); each word belongs to
   at most one phrase of that attribute. Different attributes are matched independently.
4. The attribute is correct when the values found are exactly {true value}: stated, and no other value of the
   same attribute stated. Not stated, or stated together with a wrong value, is wrong.
Ambiguous words are the vocabulary's job: e.g. the image world never lists the bare article "a" as count 1,
only "a <colour>" / "a <shape>", so the article of "a single red circle" or of any other phrase is not a count.
"""
from __future__ import annotations

import re
from collections.abc import Hashable, Mapping

from epalm.common.errors import DataFormatError

_WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def parse_attributes(caption: str, vocabulary: Mapping[str, Mapping[str, list[str]]]) -> dict[str, set[str]]:
    """attribute -> the set of values the caption states (empty when it states none)."""
    words = _words(caption)
    stated: dict[str, set[str]] = {}
    for attribute, values in vocabulary.items():
        matches = []  # (length, start, value)
        for value, phrases in values.items():
            for phrase in phrases:
                target = _words(phrase)
                if not target:
                    raise DataFormatError(f"attribute vocabulary: {attribute}={value} has a phrase with no word: "
                                          f"{phrase!r}")
                for start in range(len(words) - len(target) + 1):
                    if words[start:start + len(target)] == target:
                        matches.append((len(target), start, value))
        matches.sort(key=lambda m: (-m[0], m[1]))
        taken: set[int] = set()
        stated[attribute] = set()
        for length, start, value in matches:
            span = set(range(start, start + length))
            if taken.isdisjoint(span):
                taken |= span
                stated[attribute].add(value)
    return stated


def attribute_accuracy(predictions: Mapping[Hashable, str],
                       attributes: Mapping[Hashable, Mapping[str, str]],
                       vocabulary: Mapping[str, Mapping[str, list[str]]]) -> dict:
    """Score every predicted caption against its uid's ground-truth attributes.

    predictions: uid -> generated caption; every uid must be a key of `attributes` (same type: 42 is not "42").
    attributes: uid -> attribute -> true value (uids without a prediction are not scored).
    vocabulary: attribute -> value -> surface phrases (a world's `attribute_vocabulary()`).
    Returns {"overall": share of all (caption, attribute) pairs correct, "per_attribute": {attribute: share},
    "num_captions": int, "num_attributes": int (pairs scored)}.
    """
    if not predictions:
        raise DataFormatError("attribute_accuracy: no predictions to score")
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    for uid, caption in predictions.items():
        if uid not in attributes:
            raise DataFormatError(f"attribute_accuracy: prediction {uid!r} ({type(uid).__name__}) has no ground-truth "
                                  f"attributes")
        stated = parse_attributes(caption, vocabulary)
        for attribute, value in attributes[uid].items():
            if attribute not in vocabulary or value not in vocabulary[attribute]:
                raise DataFormatError(f"attribute_accuracy: uid {uid!r} has {attribute}={value!r}, which the "
                                      f"vocabulary does not list "
                                      f"(known: { {a: sorted(v) for a, v in vocabulary.items()} })")
            total[attribute] = total.get(attribute, 0) + 1
            correct[attribute] = correct.get(attribute, 0) + (stated[attribute] == {value})
    pairs = sum(total.values())
    return {
        "overall": sum(correct.values()) / pairs if pairs else 0.0,
        "per_attribute": {a: correct[a] / total[a] for a in sorted(total)},
        "num_captions": len(predictions),
        "num_attributes": pairs,
    }
