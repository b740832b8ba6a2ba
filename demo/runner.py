"""The offline demo: synthetic data and tiny pretrained models, each bridge against its blind baseline.

    python -m epalm.demo                       # the main table: every task, blind vs eP-ALM (11.5 min on 2 quiet cores)
    python -m epalm.demo --tasks image_vqa image_caption
    python -m epalm.demo --groups connectors   # image VQA and captions: blind, eP-ALM, input prefix
    python -m epalm.demo --groups bridges      # the demo ViT three ways: eP-ALM, LLaVA's MLP on patches, mean prefix
    python -m epalm.demo --all                 # every group (main, connectors, bridges, pairs, joint, lm)

Groups (each trains its variants with the same recipe and fixed step counts, then evaluates on the test split):
- main: every task, blind (the soft prompt alone) and eP-ALM (layer injection);
- connectors: image VQA and captioning, blind, eP-ALM and the input-prefix connector (2 tokens);
- bridges: image VQA and captioning, the demo's ViT bridged three ways into the demo's LM: eP-ALM (the CLS token of
  its last 2 blocks, injected into the LM's layers), LLaVA-1.5's GELU MLP over all 36 patch tokens of its block -2
  (36 input positions), a linear prefix from the mean of its last block's patch tokens (2 input positions);
- pairs: two images in one prompt (chat rows): blind, the first image only, both images;
- joint: one model trained on image VQA, video QA and audio captions at once against the three
  single-modality models, with as many steps in all as the three together;
- lm: image VQA with the LM trained too (model.lm.train): blind, eP-ALM (frozen LM), LoRA, full fine-tuning,
  with their trainable parameter counts.
Runs go side by side in worker processes (`--jobs`, default 2 on 2 cores), one torch thread each, so the numbers do
not depend on the core count or `--jobs` (demo/run_pool.py); the data sets are built side by side first, and each
task's blind runs go beside the first run that reads its encoder (which fills the encoder's feature cache, under
`--out`, alone). Rows `{task, metric, <variant>: value ...}` go to `outputs/demo/summary.json` (the main group's rows have
the variants blind and epalm), a table per group to `summary.md`, links to every run's predictions page
to `index.html`.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from epalm.common.atomic_io import write_text_atomic
from epalm.common.command_line import add_debug_flag, command_parser
from epalm.demo.synthetic.build import build_image_dataset
from epalm.demo.synthetic.build_audio import build_audio_dataset
from epalm.demo.synthetic.build_video import build_video_dataset
from epalm.demo.synthetic.image_pairs import build_image_pairs
from epalm.demo.run_pool import RunPool, default_jobs

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "demo"
BLIND = ("blind", ("model.visual=false",))
EPALM = ("epalm", ())
PREFIX = ("prefix", ("model.connector=prefix", "model.injected_hidden_states=1", "model.connector_options={tokens: 2}"))
LLAVA = ("llava", ("model.connector=mlp", "model.readout=patches", "model.injected_hidden_states=2"))
MEAN_PREFIX = ("mean_prefix", ("model.connector=prefix", "model.readout=mean", "model.injected_hidden_states=1",
                               "model.connector_options={tokens: 2}"))
# The LM trained too (docs/ablations.md: why these learning rates).
LORA = ("lora", ("model.lm.train=lora", "model.lm.lora.r=8", "train.lm_lr=1e-3"))
FULL = ("full", ("model.lm.train=full", "train.lm_lr=1e-4"))
EXAMPLES = """examples:
  bash run_scripts/demo.sh                  # the same as python -m epalm.demo: the main table
  python -m epalm.demo --all             # every group
  python -m epalm.demo --groups pairs joint
  python -m epalm.demo --groups lm       # image VQA with the LM frozen, LoRA, full (docs/ablations.md)
  python -m epalm.demo --tasks video_qa --set train.max_steps=50   # a quick look
  # docs/demo_data.md and docs/demo_models.md describe the data and the tiny models"""


@dataclass(frozen=True)
class DemoTask:
    name: str
    config: str
    data: str  # which synthetic data set the task reads
    kind: str  # qa, caption or chat
    media_root: str | None = None  # a data set whose images the rows point to (chat rows)


TASKS = {
    "image_vqa": DemoTask("image_vqa", "image_vqa.yaml", "image", "qa"),
    "image_caption": DemoTask("image_caption", "image_caption.yaml", "image", "caption"),
    "video_qa": DemoTask("video_qa", "video_qa.yaml", "video", "qa"),
    "video_caption": DemoTask("video_caption", "video_caption.yaml", "video", "caption"),
    "audio_caption": DemoTask("audio_caption", "audio_caption.yaml", "audio", "caption"),
    "image_pairs": DemoTask("image_pairs", "image_pairs.yaml", "image_pairs", "chat", media_root="image"),
}


@dataclass(frozen=True)
class Group:
    """Tasks x variants; a variant is a column name and the `--set` overrides that make it."""

    name: str
    tasks: tuple[str, ...]
    variants: tuple[tuple[str, tuple[str, ...]], ...]
    title: str
    joint: bool = False  # one model on all the group's tasks, against one per task
    parameters: bool = False  # a row of trainable parameter counts


GROUPS = {
    "main": Group("main", ("image_vqa", "image_caption", "video_qa", "video_caption", "audio_caption"),
                  (BLIND, EPALM), "eP-ALM vs blind baseline"),
    "connectors": Group("connectors", ("image_vqa", "image_caption"), (BLIND, EPALM, PREFIX),
                        "connectors: layer injection (eP-ALM) vs input prefix (2 tokens)"),
    "bridges": Group("bridges", ("image_vqa", "image_caption"), (BLIND, EPALM, LLAVA, MEAN_PREFIX),
                     "one ViT, three bridges: eP-ALM (CLS per block), LLaVA's MLP over patch tokens, a mean prefix"),
    "pairs": Group("pairs", ("image_pairs",),
                   (BLIND, ("first_only", ("task.max_instances=1",)), ("both", ())),
                   "two images in one prompt: blind, first image only, both"),
    "joint": Group("joint", ("image_vqa", "video_qa", "audio_caption"), (EPALM,),
                   "joint training on image, video and audio against one model per modality", joint=True),
    "lm": Group("lm", ("image_vqa",), (BLIND, EPALM, LORA, FULL),
                "training the LM too: frozen (eP-ALM), LoRA, full fine-tuning", parameters=True),
}


def data_builders(quick: bool = False) -> dict[str, Callable[[Path, Path], Any]]:
    """Each synthetic data set, built deterministically (seed 0) unless already complete; `quick`: tiny ones."""
    n = (lambda full, small: small if quick else full)
    return {
        "image": lambda out, root: build_image_dataset(out, seed=0, n_train=n(6000, 96), n_val=n(300, 8),
                                                       n_test=n(500, 16), questions_per_image=3),
        "video": lambda out, root: build_video_dataset(out, seed=0, n_train=n(3000, 48), n_val=n(200, 4),
                                                       n_test=n(400, 12)),
        "audio": lambda out, root: build_audio_dataset(out, seed=0, n_train=n(3000, 48), n_val=n(200, 4),
                                                       n_test=n(400, 12)),
        "image_pairs": lambda out, root: build_image_pairs(root / "image", out, seed=0, n_train=n(6000, 96),
                                                           n_test=n(400, 16)),
    }


def build_data_set(name: str, root: Path, quick: bool) -> None:
    """One data set under ROOT/NAME (a worker process's job: a function it can import)."""
    data_builders(quick)[name](root / name, root)


def metric_rows(task: DemoTask, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows `{task, metric, <variant>: value}`: QA / chat accuracy overall and per question type; caption
    CIDEr and attribute accuracy (overall and per attribute)."""
    def row(metric: str, read: Callable[[dict], Any]) -> dict[str, Any]:
        return {"task": task.name, "metric": metric, **{variant: read(m) for variant, m in results.items()}}

    def per_type(metrics: dict, key: str) -> Any:
        return metrics.get("per_question_type", {}).get(key)

    if task.kind in ("qa", "chat"):
        types = sorted({t for m in results.values() for t in m.get("per_question_type", {})})
        return [row("accuracy", lambda m: m["overall"])] + [
            row(f"accuracy/{t}", lambda m, t=t: per_type(m, t)) for t in types]
    rows = [row("CIDEr", lambda m: m["scores"].get("CIDEr"))]
    if all("attribute_accuracy" in m for m in results.values()):
        rows.append(row("attribute_accuracy", lambda m: 100 * m["attribute_accuracy"]["overall"]))
        names = sorted(next(iter(results.values()))["attribute_accuracy"]["per_attribute"])
        rows += [row(f"attribute_accuracy/{a}", lambda m, a=a: 100 * m["attribute_accuracy"]["per_attribute"][a])
                 for a in names]
    return rows


def _number(value) -> str:
    if isinstance(value, int):  # a parameter count
        return f"{value:,}"
    return "-" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _gain(value, base) -> str:
    if value is None or base is None:
        return "-"
    gain = value - base
    if isinstance(gain, int):
        return f"{gain:+,}"
    return f"{gain:+.3f}" if abs(gain) < 10 else f"{gain:+.1f}"


def format_table(rows: list[dict[str, Any]], variants: list[str] | None = None) -> str:
    """Markdown: a column per variant, and the gain of each non-blind variant over blind."""
    variants = variants or ["blind", "epalm"]
    names = {"blind": "blind", "epalm": "eP-ALM", "prefix": "prefix", "first_only": "first only", "both": "both",
             "llava": "LLaVA MLP (patches)", "mean_prefix": "mean prefix",
             "single": "one per modality", "joint": "joint",
             "lora": "LoRA", "full": "full"}
    gains = [v for v in variants if v != "blind"] if "blind" in variants else []
    header = ["task", "metric", *(names.get(v, v) for v in variants)]
    header += ["gain" if len(gains) == 1 else f"{names.get(v, v)} gain" for v in gains]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["task"], row["metric"], *(_number(row.get(v)) for v in variants)]
        cells += [_gain(row.get(v), row.get("blind")) for v in gains]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_index(out: Path, tables: dict[str, tuple[str, str]], runs: dict[str, tuple[Path, str]],
                seconds: dict[str, float]) -> None:
    links = "".join(
        f'<li>{name}: <a href="{os.path.relpath(path / "eval", out)}/{test}.html">predictions</a> '
        f"({seconds.get(name, 0):.0f} s)</li>"
        for name, (path, test) in runs.items()
    )
    body = ""
    for title, table in tables.values():
        cells = "".join(
            "<tr>" + "".join(f"<td>{cell.strip()}</td>" for cell in line.strip("|").split("|")) + "</tr>"
            for k, line in enumerate(table.splitlines()) if k != 1
        )
        body += f"<h2>{title}</h2><table border=1 cellpadding=4>{cells}</table>"
    write_text_atomic(out / "index.html", f"<!doctype html><meta charset=utf-8><title>eP-ALM demo</title>"
                                          f"<h1>eP-ALM demo</h1>{body}<ul>{links}</ul>")


class DemoRunner:
    """Builds what each run needs once, trains and evaluates each (task, variant) once, keeps the results. Runs of
    one task go side by side (`pool`): the blind ones beside the first that reads the encoder, which fills the
    encoder's feature cache alone; then the others, which read it."""

    def __init__(self, out: Path, extra: list[str], quick: bool, pool: RunPool):
        self.out, self.extra, self.quick, self.pool = out, extra, quick, pool
        self.built: set[str] = set()
        self.results: dict[tuple[str, str], dict[str, Any]] = {}
        self.runs: dict[str, tuple[Path, str]] = {}
        self.seconds: dict[str, float] = {}

    def build(self, names: list[str]) -> None:
        """The data sets not built yet, side by side (image pairs reuse the image set's pictures: after it)."""
        todo = [name for name in dict.fromkeys(names) if name not in self.built]
        if "image_pairs" in todo and "image" not in self.built and "image" not in todo:
            todo.insert(0, "image")
        for wave in ([name for name in todo if name != "image_pairs"], [name for name in todo if name == "image_pairs"]):
            for future in [self.pool.submit(build_data_set, name, self.out / "data", self.quick) for name in wave]:
                future.result()
            self.built.update(wave)

    def data(self, name: str) -> Path:
        self.build([name])
        return self.out / "data" / name

    def _common(self) -> list[str]:
        """Every run's last arguments: the feature cache beside the runs (`--out`), --quick's sizes, --set."""
        quick = ["--set", "train.max_steps=3", "--set", "eval.max_length=8"] if self.quick else []
        return ["--set", f"train.feature_cache_dir={self.out / 'feature_cache'}", *quick, *self.extra]

    def _submit(self, run_name: str, argv: list[str]) -> Future:
        """The run in the pool, under `--out`/RUN_NAME, with every run's last arguments."""
        return self.pool.train([*argv, "--output_dir", str(self.out / run_name), *self._common()])

    def train(self, run_name: str, argv: list[str]) -> dict[str, Any]:
        start = time.time()
        result = self._submit(run_name, argv).result()
        self.seconds[run_name] = time.time() - start
        return result

    def _argv(self, name: str, overrides: tuple[str, ...]) -> list[str]:
        task = TASKS[name]
        argv = ["--config", str(CONFIGS / task.config), "--data_dir", str(self.data(task.data))]
        if task.media_root:
            argv += ["--set", f"task.media_root={self.data(task.media_root) / 'COCO' / 'images'}"]
        for override in overrides:
            argv += ["--set", override]
        return argv

    def task_variants(self, name: str, variants: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, dict]:
        """{variant: test metrics (with trainable_parameters)} for the task, each variant trained once."""
        todo = [(variant, overrides) for variant, overrides in variants if (name, variant) not in self.results]
        blind = [item for item in todo if "model.visual=false" in item[1]]
        reading = [item for item in todo if item not in blind]
        for wave in (blind + reading[:1], reading[1:]):
            started = time.time()
            futures = {variant: self._submit(f"{name}/{variant}", self._argv(name, overrides))
                       for variant, overrides in wave}
            for variant, future in futures.items():
                output = future.result()
                self.seconds[f"{name}/{variant}"] = time.time() - started  # side by side: until it was done
                result = {**output["test"], "trainable_parameters": output["parameters"]["trainable"]}
                self.results[(name, variant)] = result
                self.runs[f"{name}/{variant}"] = (self.out / name / variant, result["split"])
        return {variant: self.results[(name, variant)] for variant, _ in variants}

    def task(self, name: str, variant: str, overrides: tuple[str, ...]) -> dict[str, Any]:
        return self.task_variants(name, ((variant, overrides),))[variant]

    def joint(self, group: Group) -> dict[str, dict[str, Any]]:
        """One model on the group's tasks (a mixture), steps = the single runs' steps together."""
        tasks = [TASKS[name] for name in group.tasks]
        argv = ["--config", str(CONFIGS / "joint.yaml")]
        for task in tasks:
            argv += ["--set", f"mixture.{task.name}.task.data_dir={self.data(task.data)}"]
        steps = 3 * len(tasks) if self.quick else None
        result = self.train("joint", argv + (["--set", f"train.max_steps={steps}"] if steps else []))
        for task in tasks:
            self.runs[f"joint/{task.name}"] = (self.out / "joint", f"{task.name}/{result['tests'][task.name]['split']}")
        return result["tests"]

    def group_rows(self, group: Group) -> tuple[list[dict[str, Any]], list[str]]:
        rows = []
        if group.joint:
            joint = self.joint(group)
            for name in group.tasks:
                results = {"single": self.task(name, "epalm", ()), "joint": joint[name]}
                rows += [{**row, "group": group.name} for row in metric_rows(TASKS[name], results)]
            return rows, ["single", "joint"]
        for name in group.tasks:
            results = self.task_variants(name, group.variants)
            task_rows = metric_rows(TASKS[name], results)
            if group.parameters:
                task_rows.append({"task": name, "metric": "trainable parameters",
                                  **{variant: m["trainable_parameters"] for variant, m in results.items()}})
            rows += task_rows if group.name == "main" else [{**row, "group": group.name} for row in task_rows]
        return rows, [variant for variant, _ in group.variants]


def run_demo(groups: list[str], out: Path, extra: list[str], tasks: list[str] | None = None,
             quick: bool = False, jobs: int = 1) -> list[dict[str, Any]]:
    from epalm.demo.pretraining import ensure_demo_models

    out.mkdir(parents=True, exist_ok=True)
    ensure_demo_models()
    pool = RunPool(jobs)
    runner = DemoRunner(out, extra, quick, pool)
    rows: list[dict[str, Any]] = []
    tables: dict[str, tuple[str, str]] = {}
    selected = []
    for name in groups:
        group = GROUPS[name]
        if tasks and not group.joint:
            group = Group(group.name, tuple(t for t in group.tasks if t in tasks), group.variants, group.title)
        if group.tasks:
            selected.append(group)
    try:
        runner.build([data for group in selected for task in group.tasks
                      for data in (TASKS[task].data, TASKS[task].media_root) if data])
        for group in selected:
            group_rows, variants = runner.group_rows(group)
            rows += group_rows
            tables[group.name] = (group.title, format_table(group_rows, variants))
            # after every group: partial results survive
            write_text_atomic(out / "summary.json", json.dumps(rows, indent=2))
    finally:
        pool.close()
    write_text_atomic(out / "summary.md", "\n\n".join(f"## {title}\n\n{table}" for title, table in tables.values()) + "\n")
    write_index(out, tables, runner.runs, runner.seconds)
    return rows


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.demo", __doc__, EXAMPLES)
    parser.add_argument("--groups", nargs="+", default=["main"], choices=list(GROUPS), metavar="GROUP",
                        help=f"{' '.join(GROUPS)} (default: main, the README's table)")
    parser.add_argument("--all", action="store_true",
                        help="every group (about 40 minutes on 2 CPU cores; bridges adds 4 runs)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), metavar="TASK",
                        help="only these tasks of the chosen groups (image_vqa, video_qa, ...)")
    parser.add_argument("--out", default="outputs/demo", metavar="DIR",
                        help="data, runs and the summary (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny data and 3 steps a run: checks the plumbing only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (repeatable)")
    parser.add_argument("--jobs", type=int, default=default_jobs(), metavar="N",
                        help="runs side by side, one thread each (default: 2 on 2 cores; same numbers)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = argument_parser().parse_args(argv)
    start = time.time()
    extra = [item for pair in (("--set", s) for s in args.set) for item in pair]
    groups = list(GROUPS) if args.all else args.groups
    rows = run_demo(groups, Path(args.out), extra, tasks=args.tasks, quick=args.quick, jobs=max(1, args.jobs))
    print("\n" + (Path(args.out) / "summary.md").read_text())
    print(f"written {Path(args.out) / 'summary.json'} ({len(rows)} rows) in {time.time() - start:.0f} s")
    return rows

