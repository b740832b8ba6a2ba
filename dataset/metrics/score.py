"""Score a predictions file: `python -m epalm.dataset.metrics.score {vqa,caption,exact-match} ...`.

Prints the metrics as JSON on stdout; warnings (missing predictions, skipped metrics) go to stderr.
A bad file is one `error: ...` line naming the file and the entry, with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.common.errors import DataFormatError
from epalm.dataset.metrics.caption_metrics import CAPTION_METRICS, caption_metrics, load_coco_references, load_coco_results
from epalm.dataset.metrics.exact_match import exact_match_accuracy
from epalm.dataset.metrics.prediction_alignment import MISSING_POLICIES, predictions_by_id
from epalm.dataset.metrics.vqa_accuracy import VQA_VERSIONS, load_vqa_ground_truth, vqa_accuracy
from epalm.dataset.tasks.annotation_file import entry_list, load_json, location, require

EXAMPLES = """examples:
  # official VQA v2 accuracy of a run's predictions (the questions file selects the questions scored)
  python -m epalm.dataset.metrics.score vqa --predictions outputs/vqa/eval/karpathy_test_predictions.json \\
      --questions data/vqa/karpathy_test_questions.json --annotations data/vqa/karpathy_test_annotations.json
  # COCO caption metrics
  python -m epalm.dataset.metrics.score caption --predictions results.json \\
      --annotations data/COCO/coco_karpathy_test_gt.json --metrics BLEU CIDEr
  # exact match (GQA, MSRVTT-QA, MSVD-QA); every item's score too
  python -m epalm.dataset.metrics.score exact-match --predictions answers.json --annotations testdev.json --per-item
  # each task's own flags: python -m epalm.dataset.metrics.score vqa --help (docs/evaluation.md)"""


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
            raise DataFormatError(f"{where}: question_id {qid!r} appears twice")
        ground_truth[qid] = entry
    return ground_truth


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.dataset.metrics.score", "Score a predictions file; the metrics are printed as "
                            "JSON on stdout.", EXAMPLES)
    tasks = parser.add_subparsers(dest="task", required=True, metavar="{vqa,caption,exact-match}",
                                  help="what to score (each has its own --help)")

    def task(name: str, summary: str) -> argparse.ArgumentParser:
        return tasks.add_parser(name, help=summary, description=summary,
                                prog=f"python -m epalm.dataset.metrics.score {name}")

    vqa = task("vqa", "official VQA v2 accuracy (overall, per answer type and question type)")
    vqa.add_argument("--predictions", type=Path, required=True, metavar="FILE",
                     help='[{"question_id", "answer"}] JSON')
    vqa.add_argument("--annotations", type=Path, required=True, metavar="FILE",
                     help="official v2_mscoco_*_annotations.json")
    vqa.add_argument("--questions", type=Path, metavar="FILE", help="official questions file: the questions scored")
    vqa.add_argument("--version", choices=VQA_VERSIONS, default="2021", help="evaluator version (default 2021)")

    caption = task("caption", "COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr, SPICE)")
    caption.add_argument("--predictions", type=Path, required=True, metavar="FILE",
                         help='[{"image_id", "caption"}] JSON')
    caption.add_argument("--annotations", type=Path, required=True, metavar="FILE",
                         help="COCO-format caption annotations")
    caption.add_argument("--metrics", nargs="+", choices=CAPTION_METRICS, default=list(CAPTION_METRICS),
                         metavar="NAME", help=f"some of {' '.join(CAPTION_METRICS)} (default: all)")

    exact = task("exact-match", "exact match after VQA normalisation (GQA, MSRVTT-QA, MSVD-QA)")
    exact.add_argument("--predictions", type=Path, required=True, metavar="FILE",
                       help='[{"question_id", "answer"}] JSON')
    exact.add_argument("--annotations", type=Path, required=True, metavar="FILE",
                       help="entries with a question_id and a label or answer")

    for sub in (vqa, caption, exact):
        sub.add_argument("--missing", choices=MISSING_POLICIES, default="ignore",
                         help="items without a prediction: leave out, score 0, fail")
        sub.add_argument("--per-item", action="store_true", help="also print the score of every item")
    add_debug_flag(parser)
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


def score(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    output = run(args)
    print(json.dumps(output, indent=2))
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status: 0, or 2 after one `error: ...` line for a bad file or option (epalm.common.errors)."""
    return run_command(score, argv)


if __name__ == "__main__":
    sys.exit(run_command(score))
