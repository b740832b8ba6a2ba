"""Score one run's captions of the evaluation items: caption attribute accuracy and the COCO caption metrics
(CIDEr, BLEU, ROUGE-L; METEOR and SPICE are left out, each starts Java for seconds), as the trainer scores the
demo's caption tasks (training/scoring.py)."""
from __future__ import annotations

import warnings
from typing import Any

from epalm.dataset.metrics.attribute_accuracy import attribute_accuracy
from epalm.dataset.metrics.caption_metrics import caption_metrics
from epalm.studies.fewshot.features import ModalityPool

CAPTION_METRICS = ("BLEU", "ROUGE_L", "CIDEr")


def score(pool: ModalityPool, captions: list[str]) -> dict[str, Any]:
    if len(captions) != len(pool):
        raise ValueError(f"{len(captions)} captions for {len(pool)} evaluation items")
    predictions = dict(zip(pool.uids, captions))
    with warnings.catch_warnings():  # without java: the simple tokenizer, said once in `tokenizer`
        warnings.simplefilter("ignore", UserWarning)
        result = caption_metrics(predictions, dict(zip(pool.uids, pool.captions)), CAPTION_METRICS)
    metrics: dict[str, Any] = {"CIDEr": result.scores["CIDEr"], "BLEU_4": result.scores["Bleu_4"],
                               "ROUGE_L": result.scores["ROUGE_L"], "caption_tokenizer": result.tokenizer}
    vocabulary = pool.vocabulary()
    if vocabulary is not None and pool.attributes is not None:
        accuracy = attribute_accuracy(predictions, dict(zip(pool.uids, pool.attributes)), vocabulary)
        metrics["attribute_accuracy"] = accuracy["overall"]
        metrics["attribute_accuracy_per_attribute"] = accuracy["per_attribute"]
    return metrics
