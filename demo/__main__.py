"""`python -m epalm.demo`: the offline demo (demo/runner.py)."""
import sys

from epalm.common.command_line import run_command
from epalm.demo.runner import main


if __name__ == "__main__":
    sys.exit(run_command(main))
