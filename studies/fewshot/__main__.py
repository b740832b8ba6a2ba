"""python -m epalm.studies.fewshot {features,pretrain,hypernetwork,tune,study} [--quick] [--config F ...]
[--set KEY=VALUE] [--force]

features: build the data sets and cache every modality's encoder features (stage 0);
pretrain: stage 0, then the shared projector on the seen modalities (stage 1);
hypernetwork: stages 0-1, then the hypernetwork (stage 2);
tune: stages 0-2, then each training method's learning rate chosen on the validation split (`tune` section);
study: stages 0-2, then every method at every k and seed, the tables and the curve (docs/fewshot.md).
Finished stages and runs of the same configuration are reused; --force redoes stages 1-2 and every run.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.studies.fewshot.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "fewshot"
COMMANDS = ("features", "pretrain", "hypernetwork", "tune", "study")


EXAMPLES = """examples:
  python -m epalm.studies.fewshot study
  python -m epalm.studies.fewshot study --quick
  python -m epalm.studies.fewshot tune --set study.eval_items=100"""


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.studies.fewshot", __doc__, EXAMPLES)
    parser.add_argument("command", choices=COMMANDS, help="the stage to run (those before it run first)")
    parser.add_argument("--config", action="append", default=[],
                        metavar="FILE",
                        help="YAML file; repeat to layer several (default configs/fewshot/study.yaml)")
    parser.add_argument("--quick", action="store_true", help="the small version (configs/fewshot/quick.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any key")
    parser.add_argument("--force", action="store_true", help="retrain stages 1-2 and rerun every run")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    paths = args.config or [CONFIGS / ("quick.yaml" if args.quick else "study.yaml")]
    if args.quick and args.config:
        paths = [*args.config, CONFIGS / "quick.yaml"]
    cfg = load_config(paths, args.set)
    if args.command == "study":
        from epalm.studies.fewshot.study import run_study

        summary = run_study(cfg, force=args.force)
        print("\n" + summary["markdown"])
        print("\ngoal: " + json.dumps(summary["goal"], indent=1, default=str))
        print(f"\nwritten {Path(cfg.out_dir) / 'study'} (summary.json, summary.md, curve.png) in "
              f"{summary['seconds']['total']:.0f} s")
        return summary
    if args.command == "tune":
        from epalm.studies.fewshot.study import run_tuning

        summary = run_tuning(cfg, force=args.force)
        print(json.dumps(summary, indent=1))
        return summary
    from epalm.studies.fewshot.stages import STAGE1, STAGE2, prepare

    if args.command == "features":
        return prepare_features(cfg)
    until = STAGE1 if args.command == "pretrain" else STAGE2
    prepared = prepare(cfg, train=True, force=args.force, until=until)
    print(f"stages ready under {cfg.out_dir} (up to {until}); seconds this call: {prepared.seconds}")
    return {"seconds": prepared.seconds}


def prepare_features(cfg) -> dict:
    """Stage 0 alone: every modality's splits with their cached features."""
    from epalm.studies.fewshot.features import load_pool

    counts = {}
    for name, source in {**cfg.seen, **cfg.new}.items():
        for split in (source.train_split, source.val_split, source.test_split):
            if split:
                counts[f"{name}/{split}"] = len(load_pool(cfg, name, source, split))
    print(json.dumps(counts, indent=1))
    return counts


if __name__ == "__main__":
    sys.exit(run_command(main))
