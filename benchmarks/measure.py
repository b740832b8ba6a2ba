"""Wall-clock medians after warm-up, and peak memory per measured mode.

Peak memory: on a GPU `torch.cuda.max_memory_allocated` (reset before each mode); on the CPU the
process's resident-set high-water mark (`VmHWM`), reset before each mode by writing 5 to
`/proc/self/clear_refs` (Linux >= 4.0). Where that reset is refused the mark is the process's
lifetime peak (`resource.getrusage`), and the result says so (`peak_memory_scope: "process"`).
"""
from __future__ import annotations

import re
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


@dataclass
class Timing:
    times_s: list[float]
    cpu_times_s: list[float]  # this process's CPU time (all threads) per repetition: work done, whatever the load
    peak_memory_mb: float
    start_memory_mb: float  # resident (CPU) or allocated (GPU) when the mode started: weights, inputs, imports
    peak_memory_scope: str  # "mode" (reset before this mode) or "process" (lifetime high-water mark)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_memory_mb(field: str = "VmHWM") -> float:
    try:
        match = re.search(rf"{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        if match:
            return int(match.group(1)) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def time_mode(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> Timing:
    """Run `fn` `warmup` times untimed, then `repeats` times timed (the device synchronised around each)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        scope, start_memory = "mode", torch.cuda.memory_allocated(device) / 2**20
    else:
        scope = "mode" if _reset_cpu_peak() else "process"
        start_memory = _cpu_memory_mb("VmRSS")
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times, cpu_times = [], []
    for _ in range(repeats):
        _synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _cpu_memory_mb()
    return Timing(times, cpu_times, peak, start_memory, scope)


def time_modes_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                           warmup: int) -> dict[str, Timing]:
    """Like `time_mode` for each of `fns`, but round-robin: repetition r of every mode before repetition r + 1
    of any, so a drift of the machine (GPU clocks under sustained load, other jobs) reaches every mode alike.
    Peak memory: the highest of the mode's own repetitions, each measured from a reset."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu_times: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, float] = {name: 0.0 for name in fns}
    starts: dict[str, float] = {}
    scope = "mode"
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                starts.setdefault(name, torch.cuda.memory_allocated(device) / 2**20)
            else:
                scope = "mode" if _reset_cpu_peak() and scope == "mode" else "process"
                starts.setdefault(name, _cpu_memory_mb("VmRSS"))
            _synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _cpu_memory_mb()
            peaks[name] = max(peaks[name], peak)
    return {name: Timing(times[name], cpu_times[name], peaks[name], starts[name], scope) for name in fns}
