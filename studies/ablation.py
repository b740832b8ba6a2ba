"""LM-size ablation: the same eP-ALM recipe on one task with decoder LMs of several sizes.

Each size trains with `epalm.training.run.main` in `<output_dir>/<size>/` (in this process, or through `--launcher`,
e.g. "accelerate launch --multi_gpu --num_processes 8"); a size whose test metrics file already exists
is skipped, an interrupted one resumes. Then `ablation.csv`, `ablation.md` and `ablation.png` (metric vs
LM parameters, log x) are written. An `--lms` entry is a shipped architecture (`opt-2.7b`: its hub id
`facebook/opt-2.7b`), a size overlay (a YAML merged onto the base config: a file, or a name in the
`--sizes` folder), or any hub id / local folder.
Arguments not listed below are passed on to main.py (e.g. `--save_best`, `--seed 1`).
"""
from __future__ import annotations

import argparse
import copy
import csv
import gc
import io
import json
import logging
import os
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.common.errors import ConfigError, MissingFileError, UserError
from epalm.models.param_count import ARCHITECTURES, build_on_meta, count_parameters, facts_by_hub_id
from epalm.training.run_config import RunConfig, load_yaml, resolve_config

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = """examples:
  # OPT-125m ... OPT-6.7B on VQA v2 (docs/ablations.md; run_scripts/ablation/*.sh on GPUs)
  python -m epalm.studies.ablation --config configs/ablation/lm_sizes_vqa.yaml --data_dir data \\
      --lms opt-125m opt-350m opt-1.3b opt-2.7b opt-6.7b --output_dir outputs/ablation/vqa
  # each size on 8 GPUs
  python -m epalm.studies.ablation ... --launcher "accelerate launch --multi_gpu --num_processes 8"
  # the demo's three LM sizes on the CPU (after run_scripts/demo.sh built the data)
  python -m epalm.studies.ablation --config configs/demo/image_vqa.yaml \\
      --sizes configs/ablation/demo_pretrained --output_dir outputs/ablation/demo \\
      --data_dir outputs/demo/data/image"""


@dataclass(frozen=True)
class LMSize:
    name: str  # as given on the command line; names the run folder
    overlay: dict[str, Any]  # merged onto the base config for this size
    source: str


@dataclass
class SizeResult:
    size: LMSize
    run_dir: Path
    lm_name: str
    lm_parameters: int | None
    total_parameters: int | None
    trainable_parameters: int | None
    split: str
    metric: str | None = None
    value: float | None = None
    status: str = "pending"
    extra: dict[str, Any] = field(default_factory=dict)


def shipped_architectures() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(ARCHITECTURES.glob("*.json"))}


def resolve_sizes(entries: list[str], sizes_dir: Path | None, random_init: bool) -> list[LMSize]:
    """One LMSize per `--lms` entry (every overlay of `sizes_dir` when no entry is given)."""
    defined = {path.stem: path for path in sorted(sizes_dir.glob("*.yaml"))} if sizes_dir is not None else {}
    if sizes_dir is not None and not defined:
        raise MissingFileError(f"--sizes {sizes_dir}: no size overlay (*.yaml) in that folder")
    entries = entries or list(defined)
    if not entries:
        raise ConfigError("no LM sizes: give --lms and/or --sizes")
    architectures = shipped_architectures()
    sizes = []
    for entry in entries:
        if entry in defined or entry.endswith(".yaml"):
            path = defined.get(entry, Path(entry))
            sizes.append(LMSize(path.stem, load_yaml(path), str(path)))
        elif entry in architectures:
            lm = ({"name": str(ARCHITECTURES / f"{entry}.json"), "random_init": True} if random_init
                  else {"name": architectures[entry]["_hub_id"], "random_init": False})
            sizes.append(LMSize(entry, {"model": {"lm": lm}}, f"models/architectures/{entry}.json"))
        else:
            sizes.append(LMSize(entry, {"model": {"lm": {"name": entry}}}, "hub id or folder"))
    names = [s.name for s in sizes]
    if len(set(names)) != len(names):
        raise ConfigError(f"an LM size is listed twice: {names}")
    return sizes


def run_folder_name(size: LMSize) -> str:
    return size.name.replace("/", "__")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main_arguments(args: argparse.Namespace, overlay_path: Path, run_dir: Path) -> list[str]:
    argv = [item for config in args.config for item in ("--config", str(config))]
    argv += ["--config", str(overlay_path), "--output_dir", str(run_dir), "--resume"]
    if args.data_dir:
        argv += ["--data_dir", str(args.data_dir)]
    argv += args.forwarded
    return argv + [item for text in args.set for item in ("--set", text)]


def _counting_config(cfg: RunConfig):
    """The model config with no weights to fetch: shipped architectures for known hub ids, random encoders."""
    model = copy.deepcopy(cfg.model)
    for encoder in model.encoders.values():
        encoder.pretrained, encoder.checkpoint = False, None
    if not model.lm.random_init:
        by_hub = facts_by_hub_id(ARCHITECTURES)
        if model.lm.name in by_hub:
            model.lm.name = str(by_hub[model.lm.name])
        model.lm.random_init = True  # a local folder's config.json is read; nothing is loaded
    return model


def describe(size: LMSize, cfg: RunConfig, run_dir: Path) -> SizeResult:
    """Parameter counts on the meta device; also checks the injection layers fit this LM's depth."""
    split = cfg.task.test_split or cfg.task.val_split
    if not split:
        raise ConfigError(f"LM size '{size.name}': the config has neither a test nor a validation split to compare on")
    try:
        model = build_on_meta(_counting_config(cfg))
    except OSError as error:  # a hub id whose config is not available offline
        logger.warning("%s: parameters not counted (%s)", size.name, error)
        return SizeResult(size, run_dir, cfg.model.lm.name, None, None, None, split)
    except UserError as error:  # e.g. injection layers beyond this LM's depth
        raise ConfigError(f"LM size '{size.name}' ({cfg.model.lm.name}): {error}") from error
    whole = count_parameters(model)
    return SizeResult(size, run_dir, cfg.model.lm.name, count_parameters(model.lm).total, whole.total,
                      whole.trainable, split)


def metrics_path(result: SizeResult) -> Path:
    return result.run_dir / "eval" / f"{result.split}_metrics.json"


def read_metric(result: SizeResult) -> None:
    metrics = json.loads(metrics_path(result).read_text())
    result.metric, result.value = metrics["main"]["name"], metrics["main"]["value"]


def train_size(argv: list[str], launcher: str | None) -> None:
    if launcher is None:
        import epalm.training.run as entry

        entry.main(argv)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return
    command = shlex.split(launcher) + [str(REPO / "main.py")] + argv
    logger.info("running %s", shlex.join(command))
    completed = subprocess.run(command, cwd=REPO)
    if completed.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with status {completed.returncode}")


def human(count: int | None) -> str:
    if count is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


COLUMNS = ("size", "lm", "lm_parameters", "trainable_parameters", "total_parameters", "split", "metric", "value",
           "status", "run_dir")


def table_rows(results: list[SizeResult]) -> list[dict[str, Any]]:
    ordered = sorted(results, key=lambda r: (r.lm_parameters is None, r.lm_parameters or 0))
    return [{"size": r.size.name, "lm": r.lm_name, "lm_parameters": r.lm_parameters,
             "trainable_parameters": r.trainable_parameters, "total_parameters": r.total_parameters,
             "split": r.split, "metric": r.metric, "value": r.value, "status": r.status, "run_dir": str(r.run_dir)}
            for r in ordered]


def write_table(rows: list[dict[str, Any]], out_dir: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(out_dir / "ablation.csv", buffer.getvalue())
    lines = ["| LM size | LM | LM parameters | trainable | metric | value | status |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.4g}"
        lines.append(f"| {row['size']} | {row['lm']} | {human(row['lm_parameters'])} | "
                     f"{human(row['trainable_parameters'])} | {row['metric'] or '-'} ({row['split']}) | {value} | "
                     f"{row['status']} |")
    _write_atomic(out_dir / "ablation.md", "\n".join(lines) + "\n")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["value"] is not None and r["lm_parameters"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        ax.plot([r["lm_parameters"] for r in points], [r["value"] for r in points], marker="o")
        for r in points:
            ax.annotate(r["size"], (r["lm_parameters"], r["value"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    metric = next((r["metric"] for r in rows if r["metric"]), "metric")
    ax.set(xscale="log", xlabel="LM parameters", ylabel=metric, title=f"{metric} vs LM size")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decade labels only
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.studies.ablation", __doc__, EXAMPLES)
    parser.add_argument("--config", action="append", required=True, metavar="FILE",
                        help="the base config (repeatable)")
    parser.add_argument("--lms", nargs="+", default=[], metavar="LM",
                        help="opt-125m ..., overlay files or names, hub ids")
    parser.add_argument("--sizes", type=Path, default=None, metavar="DIR",
                        help="a folder of size overlays, one YAML per size")
    parser.add_argument("--output_dir", type=Path, required=True, metavar="DIR",
                        help="one run folder per size, the table, the plot")
    parser.add_argument("--data_dir", default=None, metavar="DIR", help="the dataset root of every size's run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every size's run")
    parser.add_argument("--launcher", default=None, metavar="COMMAND",
                        help='run each size as `COMMAND main.py ...`')
    parser.add_argument("--random_init", action="store_true",
                        help="shipped architectures, random weights: a rehearsal")
    add_debug_flag(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args, forwarded = argument_parser().parse_known_args(argv)
    args.forwarded = forwarded
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    out_dir: Path = args.output_dir
    sizes = resolve_sizes(args.lms, args.sizes, args.random_init)
    plans = []
    for size in sizes:  # resolve and check every size before training any
        run_dir = out_dir / run_folder_name(size)
        overlay_path = run_dir / "ablation_size.yaml"
        text = yaml.safe_dump(size.overlay, sort_keys=False)
        if not overlay_path.is_file() or overlay_path.read_text() != text:  # a finished run stays untouched
            _write_atomic(overlay_path, text)
        argv_size = main_arguments(args, overlay_path, run_dir)
        plans.append((describe(size, resolve_config(argv_size), run_dir), argv_size))
    failures = []
    for result, argv_size in plans:
        if metrics_path(result).is_file():
            result.status = "existing"
            logger.info("%s: finished before (%s), skipped", result.size.name, metrics_path(result))
        else:
            logger.info("%s: training %s in %s", result.size.name, result.lm_name, result.run_dir)
            try:
                train_size(argv_size, args.launcher)
                result.status = "trained"
            except Exception as error:  # one size failing (e.g. out of memory) must not lose the others
                logger.error("%s failed:\n%s", result.size.name, traceback.format_exc())
                result.status = f"failed: {type(error).__name__}: {error}"[:200]
                failures.append(result.size.name)
                continue
        read_metric(result)
    rows = table_rows([result for result, _ in plans])
    write_table(rows, out_dir)
    plot(rows, out_dir / "ablation.png")
    print((out_dir / "ablation.md").read_text())
    print(f"written: {out_dir / 'ablation.csv'}, {out_dir / 'ablation.md'}, {out_dir / 'ablation.png'}")
    if failures:
        raise SystemExit(f"LM sizes that failed: {', '.join(failures)} (see the log above)")
    return rows


if __name__ == "__main__":
    sys.exit(run_command(main))
