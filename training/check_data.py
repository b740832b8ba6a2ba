"""Check a data folder against a run config, without building a model or training: for each split the run would
read, how many samples, whether every media file is there and decodes (each one decoded as training would), which
images a squashing encoder distorts, the answer formats of QA files and the metric the run will report, and why.
Ends with exit status 0 when every split can be used, 2 (one `error:` line) when one cannot."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.common.errors import DataFormatError, MissingFileError, UserError
from epalm.dataset.media_survey import MediaSurvey, survey_split
from epalm.dataset.tasks import TaskSplit
from epalm.models.modalities import load_plugins
from epalm.training.data import build_split
from epalm.training.data_checks import squash_effect
from epalm.training.preflight import check_choices
from epalm.training.run import task_runs
from epalm.training.run_config import RunConfig, resolve_config
from epalm.training.scoring import metric_reason

EXAMPLES = """examples:
  # ten of your own photos, captioned in the COCO Karpathy layout (README: Your own data)
  python -m epalm.training.check_data mydata --config configs/demo/image_caption.yaml
  # a VQA v2 folder, headers only (fast on a large data set: no file is decoded)
  python -m epalm.training.check_data data --config configs/image/epalm_vqa.yaml --header_only
  python main.py check-data mydata --config configs/demo/image_caption.yaml   # the same through main.py"""


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.training.check_data", __doc__, EXAMPLES)
    parser.add_argument("data_dir", metavar="DIR", help="the data folder, as main.py's --data_dir")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="the run's YAML config; repeat to layer several")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config key, as for main.py (e.g. task.media_root=photos)")
    parser.add_argument("--header_only", action="store_true",
                        help="look at image headers only (fast); default: decode every file")
    add_debug_flag(parser)
    return parser


def split_roles(cfg: RunConfig) -> dict[str, str]:
    """{split name: the config key naming it} of the splits a run reads (train, validation, test)."""
    roles: dict[str, str] = {}
    for key in ("train_split", "val_split", "test_split"):
        name = getattr(cfg.task, key)
        if name:
            roles.setdefault(name, f"task.{key}")
    return roles


def answer_formats(split: TaskSplit) -> str:
    """'12 questions: 12 with `answer`, 3 with human `answers`' (which fields the scorer can use)."""
    counts = Counter(field for sample in split for field in ("label", "answer", "answers") if field in sample.meta)
    without = sum(not sample.targets for sample in split)
    parts = [f"{counts[field]} with `{field}`" for field in ("label", "answer", "answers") if counts[field]]
    parts += [f"{without} without an answer (left out of training)"] if without else []
    return f"{len(split)} questions: {', '.join(parts) or 'none with an answer'}"


def describe_split(cfg: RunConfig, split: TaskSplit, survey: MediaSurvey, training: bool) -> list[str]:
    lines = []
    if split.kind == "qa":
        lines.append(f"  answers: {answer_formats(split)}")
    elif split.kind == "caption":
        references = [len(sample.targets) for sample in split]
        spread = f"{min(references)} to {max(references)}" if min(references) < max(references) else min(references)
        lines.append(f"  captions: {sum(references)} ({spread} per {'sample' if training else 'item'})")
    readable = survey.total - len(survey.failures)
    media = f"{survey.total} files, all readable" if not survey.failures else survey.failure_summary()
    lines.append(f"  media: {media}" if readable else f"  media: none readable: {survey.failure_summary()}")
    shapes = survey.shape_summary()
    if shapes:
        lines.append(f"  shapes: {shapes}{squash_effect(cfg, survey)}")
    if not training:
        metric, why = metric_reason(cfg.task.reader, split, cfg.task.metric)
        lines.append(f"  metric: {metric} ({why})")
    return lines


def check_task(cfg: RunConfig, header_only: bool) -> tuple[list[str], dict[str, Any]]:
    """The report lines of one task's splits, and its problems {split: reason}."""
    if not Path(cfg.task.data_dir).is_dir():
        raise MissingFileError(f"{cfg.task.data_dir}: no such folder")
    lines, problems = [f"data {cfg.task.data_dir}, reader {cfg.task.reader}"], {}
    for name, key in split_roles(cfg).items():
        try:
            split = build_split(cfg, name)
        except UserError as error:
            lines.append(f"{name} ({key}): {error}")
            problems[name] = str(error)
            continue
        training = key == "task.train_split"
        usable = [sample for sample in split if sample.targets] if training else list(split)
        lines.append(f"{name} ({key}): {len(split)} samples, media under {split.media_root}")
        if not usable:
            problems[name] = "no sample" if not len(split) else "no sample has a target to train on"
            lines.append(f"  {problems[name]}")
            continue
        survey = survey_split(split, decode_with=None if header_only else cfg.model.encoders)
        lines += describe_split(cfg, split, survey, training)
        if survey.failures and not any(survey.usable(sample) for sample in usable):
            problems[name] = f"no sample with readable media ({survey.failure_summary()})"
    return lines, problems


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = argument_parser().parse_args(argv)
    config_args = [item for path in args.config for item in ("--config", path)]
    cfg = resolve_config([*config_args, "--data_dir", args.data_dir, *[item for s in args.set for item in ("--set", s)]])
    load_plugins(cfg.model.plugins)
    problems: dict[str, Any] = {}
    for task_name, task_cfg in task_runs(cfg).items():
        check_choices(task_cfg)
        lines, found = check_task(task_cfg, args.header_only)
        print("\n".join(lines), flush=True)
        problems.update({f"{task_name} {split}": reason for split, reason in found.items()})
    if problems:
        first = next(iter(problems))
        raise DataFormatError(f"{len(problems)} split(s) cannot be used: {first}: {problems[first]}")
    print("ok: every split can be used")
    return {"problems": problems}


if __name__ == "__main__":
    sys.exit(run_command(main))
