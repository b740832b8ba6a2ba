"""Build the offline demo's tiny unimodal models (models/demo_weights/), deterministically from a seed.

tokenizer: BPE over the synthetic worlds' text; lm: a small OPT pretrained on that text only; vit: a timm ViT,
timesformer, ast and sensor: a TimeSformer, an AST and the sensor plugin's encoder, each pretrained on its
world's attribute classification.
Models already present are kept (--force rebuilds them); the LM also builds a missing tokenizer.
See docs/demo_models.md.
"""
from __future__ import annotations

import argparse
import logging
import sys

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.demo.pretraining.build import COMPONENTS, FOLDERS, ensure_demo_models
from epalm.demo.pretraining.settings import REPORT_FILE
from epalm.demo.pretraining.shipped import DEFAULT_OUT
from epalm.demo.pretraining.summary import summary_lines

EXAMPLES = """examples:
  python -m epalm.demo.pretraining                     # whatever is missing (the demo does this too)
  python -m epalm.demo.pretraining --only vit --force  # rebuild the ViT
  python -m epalm.demo.pretraining --out /tmp/demo_weights --seed 1"""


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.demo.pretraining", __doc__, EXAMPLES)
    parser.add_argument("--only", nargs="+", choices=COMPONENTS, default=list(COMPONENTS), metavar="MODEL",
                        help=f"some of: {' '.join(COMPONENTS)} (default: all)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="the seed of every build (default 0)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR",
                        help="folder of the models (default: models/demo_weights)")
    parser.add_argument("--force", action="store_true", help="rebuild the chosen models even when present")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    models = ensure_demo_models(args.out, only=args.only, seed=args.seed, force=args.force)
    for component in COMPONENTS:
        folder = models.out_dir / FOLDERS[component]
        if component not in args.only or not (folder / REPORT_FILE).exists():
            continue
        status = "built" if component in models.built else "already present, not rebuilt"
        print(f"{folder} ({status})")
        for line in summary_lines(component, models.report(component)):
            print("  " + line)


if __name__ == "__main__":
    sys.exit(run_command(main))
