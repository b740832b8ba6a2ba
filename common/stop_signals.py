"""The signals a cluster stops a job with, and a note of one that arrives before the run can act on it.

A training process spends its first seconds importing torch and the libraries; a SIGTERM or SIGUSR1 then
would end it at once (their default action) with status 143 or 138, which no launcher takes for a
preemption. `main.py` calls `note_early_stop_signals()` before those imports: a signal is only noted, and
the run (training/preemption.py) stops with exit 75 as soon as it installs its own handlers. Nothing here
imports torch, so that it costs nothing before the imports.
"""
from __future__ import annotations

import signal

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_early: list[int] = []  # the first signal noted before the run's handlers took over


def _note(signum: int, _frame) -> None:
    if not _early:
        _early.append(signum)


def note_early_stop_signals() -> None:
    """Until the run installs its own handlers, SIGTERM and SIGUSR1 are noted instead of ending the process."""
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, _note)


def early_stop_signal() -> int | None:
    """The signal noted by `note_early_stop_signals`' handlers, if one came."""
    return _early[0] if _early else None
