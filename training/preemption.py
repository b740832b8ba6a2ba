"""Stopping cleanly when a cluster preempts the job: SIGTERM or SIGUSR1 at any point of a run -> exit 75, with the
resumable state saved (or nothing to save), within a scheduler's grace time.

A scheduler warns a job before it ends it: Slurm sends SIGTERM at preemption and on `scancel` (and SIGKILL
after a grace time), and `--signal=USR1@120` asks for SIGUSR1 two minutes before the time limit. Where the
signal lands decides what is done:

- setup (the imports, reading the splits, building the model, filling the feature caches, preparing the
  engine, loading `--resume`'s state): nothing of this start is worth saving, so the signal stops the
  process where it is (its handler raises `StopRequested`); `checkpoints/last/` stays as the previous start
  left it. A signal during the imports is noted by main.py (common/stop_signals.py) and acted on here.
- training: the signal only raises a flag; at the next optimizer-step boundary every process learns, through
  one all-reduce (accelerate's `set_trigger` / `check_trigger`), whether any process got one, so all ranks
  stop at the same step even when the signal reached only some of them; they save the resumable state.
- evaluation (validation each epoch, the final test, `--evaluate`): the same agreement between two batches.
  Validation: the state from before it is saved, marked `validation_pending`, and a resumed run validates
  first. Final test: training is over and saved; a resumed run tests again. `--evaluate`: nothing to save.

Then the first process of each machine writes `preempted.json` into the run folder (for that machine's
run_scripts/launch.sh: torchrun reports any failed process as 1), and every process exits with
PREEMPTED_EXIT_STATUS. `--resume` continues the same trajectory to the bit.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, NoReturn

from accelerate import Accelerator

from epalm.common.errors import StoppedToResume
from epalm.common.stop_signals import PREEMPTION_SIGNALS, early_stop_signal

# sysexits.h's EX_TEMPFAIL, "temporary failure, the user is invited to retry": distinct from 0 (done),
# 1 (a bug's traceback), 2 (a user error), 124 (timeout(1)), 130 (Ctrl-C) and 128+N (killed by signal N).
# run_scripts/launch.sh passes it on and run_scripts/slurm/ requeues the job on it.
PREEMPTED_EXIT_STATUS = StoppedToResume.exit_status  # 75, os.EX_TEMPFAIL
PREEMPTED_MARKER = "preempted.json"  # in the run folder

# Fault injection for the tests: every process sends itself SIGUSR1 after optimizer step N, or at the first
# point of a phase where it can stop (setup: once the model is built; validation, test: before the first batch).
SIGNAL_AT_STEP_ENV = "EPALM_SIGNAL_AT_STEP"
SIGNAL_DURING_ENV = "EPALM_SIGNAL_DURING"


class StopRequested(Exception):
    """Raised where the run can stop: by the signal handler itself during setup, between evaluation batches once
    all processes agreed. The run turns it into TrainingPreempted."""


class TrainingPreempted(StoppedToResume):
    """The run stopped on a preemption signal after saving its resumable state, or with nothing to save (not an
    error: retry later with --resume)."""

    def __init__(self, step: int | None, signal_name: str, checkpoint: Path | None, phase: str = "training"):
        where = f"at step {step}" if phase == "training" else f"during {phase}" + (
            f" (after step {step})" if step else "")
        saved = f"resumable state saved in {checkpoint}" if checkpoint else "nothing to save"
        super().__init__(f"preempted ({signal_name}) {where}: {saved}; continue with --resume")
        self.step, self.signal_name, self.checkpoint, self.phase = step, signal_name, checkpoint, phase


class PreemptionWatch:
    """While entered, SIGTERM / SIGUSR1 only note themselves, except inside `at_once()` (setup), where they stop
    the process where it is. `stop_requested()` (at each step boundary) and `check_between_batches()` (each
    evaluation batch) are collective: every process calls them at the same point and gets the same answer.
    The previous handlers come back on exit."""

    def __init__(self, accelerator: Accelerator | None = None):
        self.accelerator = accelerator  # set once the run has made it: the collective checks need it
        self.received: int | None = None
        self._at_once = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python lets only the main thread set handlers: signals keep their default action
        for sig in PREEMPTION_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._note)
        self.received = early_stop_signal()  # one that came during the imports (main.py noted it)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _note(self, signum: int, _frame) -> None:
        if self.received is None:
            self.received = signum
        if self._at_once:
            raise StopRequested

    @contextlib.contextmanager
    def at_once(self) -> Iterator[None]:
        """Setup: a signal raises StopRequested where the process is (also one noted before)."""
        self._at_once = True
        try:
            if self.received is not None:
                raise StopRequested
            yield
        finally:
            self._at_once = False
        if self.received is not None:  # noted while some library code swallowed the exception
            raise StopRequested

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a signal on another process"

    def inject(self, phase: str) -> None:
        """Fault injection (SIGNAL_DURING_ENV): SIGUSR1 to this process at a stop point of `phase`."""
        if os.environ.get(SIGNAL_DURING_ENV) == phase:
            signal.raise_signal(signal.SIGUSR1)  # runs the Python handler before it returns

    def _anyone_signalled(self) -> bool:
        if self.received is not None:
            self.accelerator.set_trigger()
        return self.accelerator.check_trigger()

    def stop_requested(self, step: int) -> bool:
        """Collective: every process calls it at the same step boundary and gets the same answer."""
        if os.environ.get(SIGNAL_AT_STEP_ENV) == str(step):
            signal.raise_signal(signal.SIGUSR1)
        return self._anyone_signalled()

    def check_between_batches(self, phase: str) -> None:
        """Collective, before each evaluation batch (every process has as many): StopRequested when any process
        got a signal."""
        self.inject(phase)
        if self._anyone_signalled():
            raise StopRequested


def write_preempted_marker(run_dir: Path, rank: int, step: int | None, signal_name: str, checkpoint: Path | None,
                           phase: str = "training") -> None:
    """Written by each machine's first process (during setup: by each process that stopped), so that each
    machine's launcher sees it even where a shared folder shows other machines' files late; through a
    temporary name unique to the machine and process."""
    record = {"step": step, "signal": signal_name, "phase": phase, "rank": rank,
              "checkpoint": str(checkpoint) if checkpoint else None, "exit_status": PREEMPTED_EXIT_STATUS,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{PREEMPTED_MARKER}.{socket.gethostname()}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, run_dir / PREEMPTED_MARKER)


def clear_preempted_marker(run_dir: Path) -> None:
    (run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)


def stop_in_setup(watch: PreemptionWatch, run_dir: Path, checkpoints: Path) -> NoReturn:
    """A signal during setup: this process writes the marker and stops; nothing of this start is saved (the
    last checkpoint, if any, stays as it was). Other processes stop on their own signal or by their launcher."""
    last = checkpoints / "last"
    saved = last if last.is_dir() else None
    write_preempted_marker(run_dir, int(os.environ.get("RANK", "0")), None, watch.signal_name, saved, "setup")
    raise TrainingPreempted(None, watch.signal_name, saved, "setup")


def stop_after_agreement(accelerator: Accelerator, watch: PreemptionWatch, run_dir: Path, step: int | None,
                         checkpoint: Path | None, phase: str) -> NoReturn:
    """Every process, once all agreed to stop (and saved what there was to save): the markers, then stop."""
    if accelerator.is_local_main_process:
        write_preempted_marker(run_dir, accelerator.process_index, step, watch.signal_name, checkpoint, phase)
    accelerator.wait_for_everyone()  # no process exits (and has its launcher stop the others) before the markers exist
    accelerator.print(f"preempted ({watch.signal_name}) during {phase}: "
                      f"{f'state saved in {checkpoint}' if checkpoint else 'nothing to save'}")
    accelerator.end_training()  # the trackers' files closed
    raise TrainingPreempted(step, watch.signal_name, checkpoint, phase)
