"""The command line shared by the three synthetic data builders: `--out` and one flag per build setting."""
from __future__ import annotations

import argparse
from dataclasses import fields

from epalm.common.command_line import add_debug_flag, command_parser

SETTING_HELP = {
    "seed": "the seed of every random draw (default %(default)s)",
    "n_train": "items in the training split (default %(default)s)",
    "n_val": "items in the validation split (default %(default)s)",
    "n_test": "items in the test split (default %(default)s)",
    "questions_per_image": "questions asked about each image (default %(default)s)",
    "questions_per_video": "questions asked about each clip (default %(default)s)",
}


def build_parser(module: str, description: str, settings: type, examples: str) -> argparse.ArgumentParser:
    """`python -m <module> --out DIR [--seed N] [--n-train N] ...`: a flag per field of the `settings` dataclass."""
    parser = command_parser(f"python -m {module}", description, examples)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (the readers' data_dir)")
    for setting in fields(settings):
        parser.add_argument(f"--{setting.name.replace('_', '-')}", type=int, default=setting.default, metavar="N",
                            help=SETTING_HELP[setting.name])
    add_debug_flag(parser)
    return parser
