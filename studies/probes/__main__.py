"""`python -m epalm.studies.probes`: the same command as `python main.py probe` (studies/probes/command.py)."""
import sys

from epalm.common.command_line import run_command
from epalm.studies.probes.command import main


if __name__ == "__main__":
    sys.exit(run_command(main))
