"""Train eP-ALM (or, with --evaluate, only evaluate it) on one task: `python main.py --help`.

The run itself is `training.run`; this file is the command line around it (help, one-line errors).
"""
from __future__ import annotations

import sys

from training.command_line import run_command
from training.run import main

if __name__ == "__main__":
    sys.exit(run_command(main))
