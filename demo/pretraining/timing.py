"""Wall-clock and CPU seconds of a block, as the pretraining reports record them."""
from __future__ import annotations

import time

import torch


class Timer:
    """CPU seconds count every thread: about twice the wall time when both cores work."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_) -> None:
        self.wall = round(time.perf_counter() - self.wall, 1)
        self.cpu = round(time.process_time() - self.cpu, 1)

    def as_dict(self) -> dict:
        return {"wall_seconds": self.wall, "cpu_seconds": self.cpu, "torch_threads": torch.get_num_threads()}
