"""The offline demo: synthetic data and tiny pretrained models, eP-ALM against its blind baseline.

For each task it trains two models with the same recipe and fixed step counts: eP-ALM, and the blind
baseline (the soft prompt alone, no perceptual token), evaluates both on the test split, prints a
table and writes it to `outputs/demo/summary.json` as rows `{task, metric, blind, epalm}`, with
`summary.md` and `index.html` (links to each run's predictions page) beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import training.run as entry
from dataset.synthetic.build import build_image_dataset
from dataset.synthetic.build_audio import build_audio_dataset
from dataset.synthetic.build_video import build_video_dataset
from models.atomic_io import write_text_atomic
from training.command_line import add_debug_flag, command_parser, run_command

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "demo"
EXAMPLES = """examples:
  bash run_scripts/demo.sh                  # the same as python -m training.demo: every task
  python -m training.demo --tasks image_vqa image_caption
  python -m training.demo --tasks video_qa --set train.max_steps=50   # a quick look
  # docs/demo_data.md and docs/demo_models.md describe the data and the tiny models"""


@dataclass(frozen=True)
class DemoTask:
    name: str
    config: str
    data: str  # which synthetic data set the task reads
    kind: str  # qa or caption


TASKS = {
    "image_vqa": DemoTask("image_vqa", "image_vqa.yaml", "image", "qa"),
    "image_caption": DemoTask("image_caption", "image_caption.yaml", "image", "caption"),
    "video_qa": DemoTask("video_qa", "video_qa.yaml", "video", "qa"),
    "video_caption": DemoTask("video_caption", "video_caption.yaml", "video", "caption"),
    "audio_caption": DemoTask("audio_caption", "audio_caption.yaml", "audio", "caption"),
}


def data_builders() -> dict[str, Callable[[Path], Any]]:
    """Each synthetic data set, built deterministically (seed 0) unless already complete."""
    builders: dict[str, Callable[[Path], Any]] = {
        "image": lambda out: build_image_dataset(out, seed=0, n_train=6000, n_val=300, n_test=500,
                                                 questions_per_image=3),
    }
    builders["video"] = lambda out: build_video_dataset(out, seed=0, n_train=3000, n_val=200, n_test=400)
    builders["audio"] = lambda out: build_audio_dataset(out, seed=0, n_train=3000, n_val=200, n_test=400)
    return builders


def rows_for(task: DemoTask, blind: dict[str, Any], epalm: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows: QA accuracy overall and per question type; caption CIDEr and attribute accuracy."""
    if task.kind == "qa":
        rows = [{"task": task.name, "metric": "accuracy", "blind": blind["overall"], "epalm": epalm["overall"]}]
        for qtype in sorted(epalm.get("per_question_type", {})):
            rows.append({"task": task.name, "metric": f"accuracy/{qtype}",
                         "blind": blind["per_question_type"].get(qtype), "epalm": epalm["per_question_type"][qtype]})
        return rows
    rows = [{"task": task.name, "metric": "CIDEr", "blind": blind["scores"].get("CIDEr"),
             "epalm": epalm["scores"].get("CIDEr")}]
    if "attribute_accuracy" in epalm:
        rows.append({"task": task.name, "metric": "attribute_accuracy",
                     "blind": 100 * blind["attribute_accuracy"]["overall"],
                     "epalm": 100 * epalm["attribute_accuracy"]["overall"]})
        for name, value in sorted(epalm["attribute_accuracy"]["per_attribute"].items()):
            rows.append({"task": task.name, "metric": f"attribute_accuracy/{name}",
                         "blind": 100 * blind["attribute_accuracy"]["per_attribute"][name], "epalm": 100 * value})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def number(value) -> str:
        return "-" if value is None else f"{value:.3f}" if value < 10 else f"{value:.1f}"

    lines = ["| task | metric | blind | eP-ALM | gain |", "|---|---|---|---|---|"]
    for row in rows:
        gain = None if row["blind"] is None or row["epalm"] is None else row["epalm"] - row["blind"]
        lines.append(f"| {row['task']} | {row['metric']} | {number(row['blind'])} | {number(row['epalm'])} | "
                     f"{'-' if gain is None else f'{gain:+.3f}' if abs(gain) < 10 else f'{gain:+.1f}'} |")
    return "\n".join(lines)


def write_index(out: Path, rows: list[dict[str, Any]], runs: dict[str, Path], seconds: dict[str, float]) -> None:
    links = "".join(
        f'<li>{name}: <a href="{os.path.relpath(path / "eval", out)}/{test}.html">predictions</a> '
        f"({seconds.get(name, 0):.0f} s)</li>"
        for name, (path, test) in runs.items()
    )
    table = format_table(rows).replace("|---|---|---|---|---|\n", "")
    body = "".join(
        "<tr>" + "".join(f"<td>{cell.strip()}</td>" for cell in line.strip("|").split("|")) + "</tr>"
        for line in table.splitlines()
    )
    write_text_atomic(out / "index.html", f"<!doctype html><meta charset=utf-8><title>eP-ALM demo</title>"
                 f"<h1>eP-ALM vs blind baseline</h1><table border=1 cellpadding=4>{body}</table><ul>{links}</ul>")


def run_demo(tasks: list[str], out: Path, extra: list[str]) -> list[dict[str, Any]]:
    from training.demo_pretraining import ensure_demo_models

    out.mkdir(parents=True, exist_ok=True)
    builders = data_builders()
    ensure_demo_models()
    rows: list[dict[str, Any]] = []
    runs: dict[str, tuple[Path, str]] = {}
    seconds: dict[str, float] = {}
    for name in tasks:
        task = TASKS[name]
        data_dir = out / "data" / task.data
        builders[task.data](data_dir)
        results = {}
        for variant, overrides in (("blind", ["--set", "model.visual=false"]), ("epalm", [])):
            run_dir = out / name / variant
            start = time.time()
            result = entry.main(["--config", str(CONFIGS / task.config), "--data_dir", str(data_dir),
                                 "--output_dir", str(run_dir), *overrides, *extra])
            seconds[f"{name}/{variant}"] = time.time() - start
            results[variant] = result["test"]
            runs[f"{name}/{variant}"] = (run_dir, result["test"]["split"] if task.kind == "qa" else "test")
        rows.extend(rows_for(task, results["blind"], results["epalm"]))
        write_text_atomic(out / "summary.json", json.dumps(rows, indent=2))  # after every task: partial results survive
    write_text_atomic(out / "summary.md", format_table(rows) + "\n")
    write_index(out, rows, runs, seconds)
    return rows


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m training.demo", __doc__, EXAMPLES)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                        help=f"{' '.join(TASKS)} (default all)")
    parser.add_argument("--out", default="outputs/demo", metavar="DIR",
                        help="data, runs and the summary (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (repeatable)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = argument_parser().parse_args(argv)
    start = time.time()
    extra = [item for pair in (("--set", s) for s in args.set) for item in pair]
    rows = run_demo(args.tasks, Path(args.out), extra)
    print("\n" + format_table(rows))
    print(f"\nwritten {Path(args.out) / 'summary.json'} in {time.time() - start:.0f} s")
    return rows


if __name__ == "__main__":
    sys.exit(run_command(main))
