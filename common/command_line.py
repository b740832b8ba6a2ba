"""How every command of the project ends: results, or one `error: ...` line and exit status 2.

User errors (epalm.common.errors.UserError: a config key, a path, a file's content, a launch) are
printed as one line (plus indented detail lines where the message has them), once per launch (by the
process of rank 0), without a traceback. Any other exception is a bug and keeps its traceback. With
`--debug` on the command line or EPALM_DEBUG=1 in the environment, user errors keep theirs too. A run
stopped by a preemption signal after saving its state exits with 75 (training/preemption.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from epalm.common.errors import StoppedToResume, UserError

DEBUG_ENV = "EPALM_DEBUG"
USER_ERROR_STATUS = 2
EXIT_STATUSES = ("exit status: 0 done; 2 a mistake in the command line, a config or a named file,\n"
                 f"  printed as one `error: ...` line (--debug or {DEBUG_ENV}=1: with traceback);\n"
                 "  1 a bug (printed with its traceback); 130 interrupted")


def command_parser(prog: str, description: str, examples: str = "") -> argparse.ArgumentParser:
    """The parser of every command: description and examples printed as written, then the exit statuses.
    Finish it with `add_debug_flag` so that `--debug` is listed last."""
    epilog = f"{examples.strip()}\n\n{EXIT_STATUSES}" if examples.strip() else EXIT_STATUSES
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """`--debug` is taken out of argv by `run_command` before parsing; it is declared only to be documented."""
    parser.add_argument("--debug", action="store_true", help=f"show the traceback of user errors too ({DEBUG_ENV}=1)")


def is_main_process() -> bool:
    """Rank 0 of a launch (torchrun / accelerate set RANK), or a lone process."""
    return os.environ.get("RANK", "0") == "0"


_NOTICED: set[str] = set()


def notice_once(text: str) -> None:
    """A one-line `note:` on stderr, printed once per process (by rank 0 of a launch): something the user may want
    to change, that does not stop the command (an old config key read in its new place)."""
    if text in _NOTICED:
        return
    _NOTICED.add(text)
    if is_main_process():
        print(f"note: {text}", file=sys.stderr)


def format_user_error(error: BaseException) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return "\n".join([f"error: {lines[0]}", *("  " + line.strip() for line in lines[1:])])


def run_command(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> int:
    """Call `main(argv)` (argv without `--debug`); returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        main(argv)
    except UserError as error:
        if debug:
            raise
        if is_main_process():
            print(format_user_error(error), file=sys.stderr)
        return USER_ERROR_STATUS
    except StoppedToResume as stop:
        if is_main_process():
            print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        if is_main_process():
            print("interrupted", file=sys.stderr)
        return 130
    return 0
