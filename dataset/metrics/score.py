"""Score a predictions file: `python -m dataset.metrics.score {vqa,caption,exact-match} ...`.

Prints the metrics as JSON on stdout; warnings (missing predictions, skipped metrics) go to stderr.
A bad file exits with status 2 and a message naming the file and the entry.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataset.metrics.caption_metrics import CAPTION_METRICS, caption_metrics, load_coco_references, load_coco_results
from dataset.metrics.exact_match import exact_match_accuracy
from dataset.metrics.prediction_alignment import MISSING_POLICIES, predictions_by_id
from dataset.metrics.vqa_accuracy import VQA_VERSIONS, load_vqa_ground_truth, vqa_accuracy
from dataset.tasks.annotation_file import entry_list, load_json, location, require


def _qa_predictions(path: Path) -> dict[str, str]:
    return predictions_by_id(entry_list(load_json(path), path), str(path))


def load_qa_ground_truth(path: Path) -> dict[Any, dict]:
    """GQA / video-QA style annotations: a list (or `{"annotations": [...]}`) of entries with a
    `question_id` and a `label` dict or an `answer` string."""
    data = load_json(path)
    entries = entry_list(data, path, "annotations" if isinstance(data, dict) else None)
    ground_truth: dict[Any, dict] = {}
    for index, entry in enumerate(entries):
        where = location(path, index, entry, "question_id")
        qid = require(entry, "question_id", (int, str), where)
        if "label" in entry:
            require(entry, "label", dict, where)
        else:
            require(entry, "answer", str, where)
        if qid in ground_truth:
            raise ValueError(f"{where}: question_id {qid!r} appears twice")
        ground_truth[qid] = entry
    return ground_truth


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dataset.metrics.score", description=__doc__.splitlines()[0])
    tasks = parser.add_subparsers(dest="task", required=True)

    vqa = tasks.add_parser("vqa", help="official VQA v2 accuracy")
    vqa.add_argument("--predictions", type=Path, required=True, help='[{"question_id", "answer"}] JSON')
    vqa.add_argument("--annotations", type=Path, required=True, help="official v2_mscoco_*_annotations.json")
    vqa.add_argument("--questions", type=Path, help="official questions file: the questions to score")
    vqa.add_argument("--version", choices=VQA_VERSIONS, default="2021", help="evaluator version (default 2021)")

    caption = tasks.add_parser("caption", help="COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr, SPICE)")
    caption.add_argument("--predictions", type=Path, required=True, help='[{"image_id", "caption"}] JSON')
    caption.add_argument("--annotations", type=Path, required=True, help="COCO-format caption annotations")
    caption.add_argument("--metrics", nargs="+", choices=CAPTION_METRICS, default=list(CAPTION_METRICS))

    exact = tasks.add_parser("exact-match", help="exact match after VQA normalisation (GQA, video QA)")
    exact.add_argument("--predictions", type=Path, required=True, help='[{"question_id", "answer"}] JSON')
    exact.add_argument("--annotations", type=Path, required=True, help="entries with question_id and label/answer")

    for sub in (vqa, caption, exact):
        sub.add_argument("--missing", choices=MISSING_POLICIES, default="ignore",
                         help="ground-truth items without a prediction: leave out (default), score 0, or fail")
        sub.add_argument("--per-item", action="store_true", help="also print the score of every item")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    source = str(args.predictions)
    if args.task == "vqa":
        truth = load_vqa_ground_truth(args.annotations, args.questions)
        result = vqa_accuracy(_qa_predictions(args.predictions), truth, args.version, args.missing, source)
        return result.to_dict(per_question=args.per_item)
    if args.task == "exact-match":
        truth = load_qa_ground_truth(args.annotations)
        result = exact_match_accuracy(_qa_predictions(args.predictions), truth, args.missing, source)
        return result.to_dict(per_question=args.per_item)
    references = load_coco_references(args.annotations)
    result = caption_metrics(load_coco_results(args.predictions), references, args.metrics, args.missing, source)
    return result.to_dict(per_item=args.per_item)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        output = run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(output, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
