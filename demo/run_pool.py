"""The demo's runs (and data set builds) side by side: worker processes, one torch thread per run.

The demo trains small models whose operations make poor use of a second thread: on a 2-core machine two runs at
once, one thread each, finish in about the time one run takes on both cores. One thread per run also makes the
demo's numbers the same on any machine of a CPU family whatever its core count and `--jobs` (a run's float
reductions depend on its thread count; the runs in this process get one thread too).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable

RUN_THREADS = 1


def default_jobs() -> int:
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _one_thread() -> None:
    import torch

    torch.set_num_threads(RUN_THREADS)


def _train(argv: list[str]) -> dict[str, Any]:
    import epalm.training.run as entry

    return entry.main(argv)


class RunPool:
    """`submit(fn, *args)`: `fn(*args)` in a worker process (spawned once, reused), or here with `jobs` 1."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self._executor: ProcessPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], *args) -> Future:
        if self.jobs > 1:
            if self._executor is None:  # spawned: a fork would copy this process's threads and locks
                self._executor = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_one_thread)
            return self._executor.submit(fn, *args)
        import torch

        done: Future = Future()
        threads = torch.get_num_threads()
        torch.set_num_threads(RUN_THREADS)
        try:
            done.set_result(fn(*args))
        except Exception as error:  # raised again by result(), as from a worker
            done.set_exception(error)
        finally:
            torch.set_num_threads(threads)
        return done

    def train(self, argv: list[str]) -> Future:
        """`main.py ARGV` (epalm.training.run.main): its results."""
        return self.submit(_train, argv)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
