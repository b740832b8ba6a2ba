"""Smaller siblings of the demo LM, for the LM-size ablation on the demo data (docs/ablations.md).

Each is pretrained exactly as `opt-demo` (same text-only corpus, seed, steps and learning rate, the shipped
tokenizer), only narrower and shallower, into `models/demo_weights/<name>`; the sizes already there are
skipped. `configs/ablation/demo_sizes/*.yaml` point at them and at `opt-demo` (the largest).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.demo.pretraining.build import build_lm
from epalm.demo.pretraining.settings import LMSettings
from epalm.demo.pretraining.shipped import DEFAULT_OUT

SIZES = {
    "opt-demo-h32-l2": replace(LMSettings(), hidden_size=32, num_layers=2, num_heads=4, ffn_dim=128),
    "opt-demo-h64-l3": replace(LMSettings(), hidden_size=64, num_layers=3, num_heads=8, ffn_dim=256),
}


EXAMPLES = """examples:
  python -m epalm.demo.pretraining.lm_sizes                                # the sizes not yet there
  python -m epalm.demo.pretraining.lm_sizes --only opt-demo-h32-l2 --force  # rebuild one"""


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.demo.pretraining.lm_sizes", __doc__, EXAMPLES)
    parser.add_argument("--only", nargs="+", choices=list(SIZES), default=list(SIZES), metavar="SIZE",
                        help=f"some of: {' '.join(SIZES)} (default: both)")
    parser.add_argument("--force", action="store_true", help="rebuild sizes that are already there")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    for name in args.only:
        target = DEFAULT_OUT / name
        if target.exists() and not args.force:
            print(f"{target} already present, not rebuilt")
            continue
        if target.exists():
            shutil.rmtree(target)
        print(f"built {build_lm(DEFAULT_OUT, seed=0, settings=SIZES[name], folder=name)}")


if __name__ == "__main__":
    sys.exit(run_command(main))
