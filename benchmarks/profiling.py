"""Where a mode's time goes: one extra repetition under torch.profiler, its top operators (`--profile`)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile


def top_operators(fn: Callable[[], Any], device: torch.device, rows: int = 12) -> list[dict[str, Any]]:
    """The operators with the most self time (device time on a GPU, CPU time otherwise), as dicts."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    on_gpu = device.type == "cuda"
    key = (lambda e: e.self_device_time_total) if on_gpu else (lambda e: e.self_cpu_time_total)
    total = sum(key(e) for e in events) or 1
    return [
        {"op": e.key, "calls": e.count, "self_ms": key(e) / 1000, "share": key(e) / total}
        for e in sorted(events, key=key, reverse=True)[:rows]
    ]


def format_profile(name: str, operators: list[dict[str, Any]]) -> str:
    lines = [f"{name}: top operators by self time"]
    lines += [f"  {o['share'] * 100:5.1f}%  {o['self_ms']:9.1f} ms  {o['calls']:6d}x  {o['op']}" for o in operators]
    return "\n".join(lines)
