"""Caption metrics of the COCO caption toolkit (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE.

CIDEr is pycocoevalcap's `Cider`, i.e. CIDEr-D (document frequencies from the scored references).
Captions are tokenized by the toolkit's PTBTokenizer (Stanford CoreNLP, Java), as published numbers are.
Without `java` on PATH, METEOR and SPICE are skipped and a simple tokenizer stands in for the PTB one
(lower-case, punctuation to spaces): BLEU / ROUGE-L / CIDEr are then close to, not equal to, the toolkit's.
SPICE also needs Stanford CoreNLP 3.6.0 jars in pycocoevalcap's `spice/lib`; the toolkit downloads them
on first use, which this module never triggers: without them SPICE is skipped. Every skip is stated in
the result's `skipped`.
"""
from __future__ import annotations

import logging
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from epalm.common.errors import ConfigError, DataFormatError
from epalm.dataset.metrics.prediction_alignment import MissingPolicy, align, predictions_by_id
from epalm.dataset.tasks.annotation_file import entry_list, load_json, location, require

logger = logging.getLogger(__name__)

CAPTION_METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
NEEDS_JAVA = {"METEOR", "SPICE"}
SPICE_JARS = ("spice-1.0.jar", "lib/stanford-corenlp-3.6.0.jar", "lib/stanford-corenlp-3.6.0-models.jar")
# The toolkit's PTB post-processing drops these tokens; the simple tokenizer drops punctuation likewise.
_NON_WORD = re.compile(r"[^\w\s]")


@dataclass
class CaptionResult:
    """Corpus scores (fractions, as the toolkit reports them: CIDEr 1.2 is 120 in papers)."""

    scores: dict[str, float]
    per_item: dict[Any, dict[str, float]]
    skipped: dict[str, str]
    tokenizer: str
    num_scored: int
    num_missing: int
    missing_policy: str
    missing_ids: list[Any] = field(default_factory=list)

    def to_dict(self, per_item: bool = False) -> dict[str, Any]:
        out = {
            "metric": "caption", "scores": self.scores, "skipped": self.skipped, "tokenizer": self.tokenizer,
            "num_scored": self.num_scored, "num_missing": self.num_missing,
            "missing_policy": self.missing_policy, "missing_ids_sample": self.missing_ids[:10],
        }
        if per_item:
            out["per_item"] = {str(key): value for key, value in self.per_item.items()}
        return out


def spice_jars_missing() -> list[str]:
    """The SPICE jars absent from the installed pycocoevalcap (empty when SPICE can run offline)."""
    import pycocoevalcap.spice  # pycocoevalcap is a namespace package: no __file__, a __path__

    spice_dir = Path(next(iter(pycocoevalcap.spice.__path__)))
    return [name for name in SPICE_JARS if not (spice_dir / name).is_file()]


def simple_tokenize(caption: str) -> str:
    """The no-Java stand-in for the PTB tokenizer: lower-case, punctuation to spaces, single spaces."""
    return " ".join(_NON_WORD.sub(" ", caption.lower()).split())


def _tokenize(captions: dict[int, list[str]], use_ptb: bool) -> dict[int, list[str]]:
    if not use_ptb:
        return {key: [simple_tokenize(text) for text in texts] for key, texts in captions.items()}
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The PTB wrapper pairs output lines with captions: any line break inside a caption (\r, \u2028, ...)
    # would shift every later caption, so each caption is made one line first.
    one_line = {key: [{"caption": " ".join(text.splitlines())} for text in texts] for key, texts in captions.items()}
    return PTBTokenizer().tokenize(one_line)


def _run_scorer(name: str, gts: dict, res: dict) -> tuple[dict[str, float], dict[str, list[float]]]:
    """One toolkit scorer: corpus scores and per-item scores, by the toolkit's metric names."""
    if name == "BLEU":
        from pycocoevalcap.bleu.bleu import Bleu

        corpus, items = Bleu(4).compute_score(gts, res, verbose=0)
        names = [f"Bleu_{n}" for n in range(1, 5)]
        return dict(zip(names, map(float, corpus))), dict(zip(names, items))
    if name == "METEOR":
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()  # starts a Java process (~12 s); freed (and killed) when the scorer is dropped
        corpus, items = scorer.compute_score(gts, res)
        del scorer
        return {"METEOR": float(corpus)}, {"METEOR": list(items)}
    if name == "ROUGE_L":
        from pycocoevalcap.rouge.rouge import Rouge

        corpus, items = Rouge().compute_score(gts, res)
        return {"ROUGE_L": float(corpus)}, {"ROUGE_L": list(items)}
    if name == "CIDEr":
        from pycocoevalcap.cider.cider import Cider

        corpus, items = Cider().compute_score(gts, res)
        return {"CIDEr": float(corpus)}, {"CIDEr": list(items)}
    from pycocoevalcap.spice.spice import Spice

    corpus, items = Spice().compute_score(gts, res)
    return {"SPICE": float(corpus)}, {"SPICE": [item["All"]["f"] for item in items]}


def caption_metrics(
    predictions: Mapping[Any, str] | Iterable[Mapping[str, Any]],
    references: Mapping[Any, Sequence[str]],
    metrics: Sequence[str] = CAPTION_METRICS,
    missing: MissingPolicy = "ignore",
    source: str = "predictions",
) -> CaptionResult:
    """Score captions against references with the COCO caption toolkit.

    predictions: `{uid: caption}` or COCO results `[{"image_id", "caption"}]`.
    references: `{uid: [caption, ...]}` (for a captioning reader: `{s.uid: s.targets for s in samples}`).
    metrics: a subset of CAPTION_METRICS ("BLEU" gives Bleu_1..Bleu_4).
    missing: "ignore" / "error", or "zero" to score a missing prediction as an empty caption.
    """
    unknown = [name for name in metrics if name not in CAPTION_METRICS]
    if unknown:
        raise ConfigError(f"unknown caption metrics {unknown}; expected a subset of {CAPTION_METRICS}")
    for uid, refs in references.items():
        if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(ref, str) for ref in refs):
            raise DataFormatError(f"references of {uid!r}: expected a non-empty list of strings, got {refs!r:.80}")
    alignment = align(predictions_by_id(predictions, source, "image_id", "caption"), references.keys(),
                      missing, source)
    # The toolkit's scorers want plain, sortable keys: number the items, map back at the end.
    gts = {index: list(references[uid]) for index, uid in enumerate(alignment.ids)}
    res = {index: [alignment.predictions[str(uid)] or ""] for index, uid in enumerate(alignment.ids)}

    skipped: dict[str, str] = {}
    use_ptb = shutil.which("java") is not None
    if not use_ptb:
        warnings.warn("java is not on PATH: METEOR and SPICE are skipped, and a simple lower-case / "
                      "punctuation-strip tokenizer replaces the PTB tokenizer (scores are not comparable "
                      "to published ones)", stacklevel=2)
        skipped.update({name: "java is not on PATH" for name in metrics if name in NEEDS_JAVA})
    elif "SPICE" in metrics and (absent := spice_jars_missing()):
        skipped["SPICE"] = f"SPICE jars absent from pycocoevalcap/spice ({', '.join(absent)}); not downloaded"
        logger.warning("SPICE skipped: %s", skipped["SPICE"])
    gts, res = _tokenize(gts, use_ptb), _tokenize(res, use_ptb)

    scores: dict[str, float] = {}
    per_index: dict[int, dict[str, float]] = {index: {} for index in gts}
    for name in metrics:
        if name in skipped:
            continue
        logger.info("computing %s on %d captions", name, len(gts))
        corpus, items = _run_scorer(name, gts, res)
        scores.update(corpus)
        for metric_name, values in items.items():
            for index, value in zip(gts, values):
                per_index[index][metric_name] = float(value)
    return CaptionResult(
        scores=scores, per_item={alignment.ids[index]: value for index, value in per_index.items()},
        skipped=skipped, tokenizer="ptb" if use_ptb else "simple (no java)", num_scored=len(gts),
        num_missing=len(alignment.missing_ids), missing_policy=missing, missing_ids=alignment.missing_ids,
    )


def load_coco_references(annotations_path: str | Path) -> dict[Any, list[str]]:
    """COCO caption annotations `{"images": [...], "annotations": [{image_id, caption, id}]}` ->
    `{image_id: [captions]}`, in the order of `images` (every listed image needs a caption)."""
    data = load_json(annotations_path)
    references: dict[Any, list[str]] = {}
    if isinstance(data, dict) and "images" in data:
        for index, image in enumerate(entry_list(data, annotations_path, "images")):
            references[require(image, "id", (int, str), f"{annotations_path}: images entry {index}")] = []
    listed = bool(references)
    for index, entry in enumerate(entry_list(data, annotations_path, "annotations")):
        where = location(annotations_path, index, entry, "id")
        image_id = require(entry, "image_id", (int, str), where)
        caption = require(entry, "caption", str, where)
        if listed and image_id not in references:
            raise DataFormatError(f"{where}: image_id {image_id!r} is not in the file's 'images'")
        references.setdefault(image_id, []).append(caption)
    empty = [image_id for image_id, captions in references.items() if not captions]
    if empty:
        raise DataFormatError(f"{annotations_path}: {len(empty)} image(s) have no caption, e.g. {empty[:10]}")
    return references


def load_coco_results(results_path: str | Path) -> dict[str, str]:
    """COCO caption results `[{"image_id", "caption"}]` -> `{str(image_id): caption}`, checked."""
    return predictions_by_id(entry_list(load_json(results_path), results_path), str(results_path),
                             "image_id", "caption")
