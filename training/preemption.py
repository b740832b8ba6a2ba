"""Stopping cleanly when a cluster preempts the job: SIGTERM or SIGUSR1 -> save at the next step boundary, exit 75.

A scheduler warns a job before it ends it: Slurm sends SIGTERM at preemption and on `scancel` (and SIGKILL
after a grace time), and `--signal=USR1@120` asks for SIGUSR1 two minutes before the time limit. While
training, either signal only raises a flag; at the next optimizer-step boundary every process learns,
through one all-reduce (accelerate's `set_trigger` / `check_trigger`), whether any process got one, so all
ranks stop at the same step even when the signal reached only some of them. They save the resumable
state (`checkpoints/last/`), the first process of each machine writes `preempted.json` into the run folder
(for that machine's run_scripts/launch.sh: torchrun reports any failed process as 1), and every process
exits with PREEMPTED_EXIT_STATUS. `--resume` then continues the same trajectory to the bit.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from accelerate import Accelerator

from epalm.common.errors import StoppedToResume

# sysexits.h's EX_TEMPFAIL, "temporary failure, the user is invited to retry": distinct from 0 (done),
# 1 (a bug's traceback), 2 (a user error), 124 (timeout(1)), 130 (Ctrl-C) and 128+N (killed by signal N).
# run_scripts/launch.sh passes it on and run_scripts/slurm/ requeues the job on it.
PREEMPTED_EXIT_STATUS = StoppedToResume.exit_status  # 75, os.EX_TEMPFAIL
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PREEMPTED_MARKER = "preempted.json"  # in the run folder

# Fault injection for the tests: every process sends itself SIGUSR1 after optimizer step N.
SIGNAL_AT_STEP_ENV = "EPALM_SIGNAL_AT_STEP"


class TrainingPreempted(StoppedToResume):
    """Training stopped on a preemption signal after saving its resumable state (not an error: retry later)."""

    def __init__(self, step: int, signal_name: str, checkpoint: Path):
        super().__init__(f"preempted ({signal_name}) at step {step}: resumable state saved in {checkpoint}; "
                         "continue with --resume")
        self.step, self.signal_name, self.checkpoint = step, signal_name, checkpoint


class PreemptionWatch:
    """While entered, SIGTERM / SIGUSR1 only note themselves; `stop_requested()` (all processes, at each step
    boundary) says whether any process got one. The previous handlers come back on exit."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python lets only the main thread set handlers: signals keep their default action
        for sig in PREEMPTION_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _note(self, signum: int, _frame) -> None:
        if self.received is None:
            self.received = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a signal on another process"

    def stop_requested(self, step: int) -> bool:
        """Collective: every process calls it at the same step boundary and gets the same answer."""
        if os.environ.get(SIGNAL_AT_STEP_ENV) == str(step):
            signal.raise_signal(signal.SIGUSR1)  # runs the Python handler before it returns
        if self.received is not None:
            self.accelerator.set_trigger()
        return self.accelerator.check_trigger()


def write_preempted_marker(run_dir: Path, rank: int, step: int, signal_name: str, checkpoint: Path) -> None:
    """Written by each machine's first process, so that each machine's launcher sees it even where a shared
    folder shows other machines' files late; through a temporary name unique to the machine and process."""
    record = {"step": step, "signal": signal_name, "rank": rank, "checkpoint": str(checkpoint),
              "exit_status": PREEMPTED_EXIT_STATUS, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = run_dir / f".{PREEMPTED_MARKER}.{socket.gethostname()}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, run_dir / PREEMPTED_MARKER)


def clear_preempted_marker(run_dir: Path) -> None:
    (run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)
