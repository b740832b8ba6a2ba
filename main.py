"""Train eP-ALM (or, with --evaluate, only evaluate it) on one task: `python main.py --help`.
Talk to a trained model: `python main.py chat --help`, `python main.py predict --help` (docs/chat.md).
Hand it on or show it: `python main.py export --help`, `python main.py serve --help` (docs/chat.md).
Probe what its connector carries: `python main.py probe --help` (docs/probes.md).
Check a data folder before training: `python main.py check-data --help` (docs/datasets.md).

The run itself is `epalm.training.run`; this file is the command line around it (help, one-line errors).
"""
from __future__ import annotations

import importlib
import sys

from epalm.common.command_line import run_command
from epalm.common.stop_signals import note_early_stop_signals

# The first argument picks a command; anything else (`--config ...`) is a training run, as always.
COMMANDS = {"chat": "epalm.inference.chat", "predict": "epalm.inference.predict", "export": "epalm.inference.export",
            "serve": "epalm.inference.serve", "probe": "epalm.studies.probes.command",
            "check-data": "epalm.training.check_data"}

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        sys.exit(run_command(importlib.import_module(COMMANDS[argv[0]]).main, argv[1:]))
    if argv[:1] in (["-h"], ["--help"]):
        print("commands: python main.py chat --help | python main.py predict --help (talk to a trained model)\n"
              "          python main.py export --help | python main.py serve --help (a shareable folder, a web demo)\n"
              "          python main.py probe --help (projection probes, docs/probes.md)\n"
              "          python main.py check-data --help (check a data folder without training)\n")
    note_early_stop_signals()  # a preemption signal during the next seconds of imports: exit 75, not 143
    from epalm.training.run import main

    sys.exit(run_command(main))
