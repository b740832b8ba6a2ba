"""How often a run logs its loss and does its epoch-end work (validation, `checkpoints/last`), sized to the run.

A small data set makes an epoch one step long: validating and rewriting `checkpoints/last` at every epoch end
then happens at every step (a hundred evaluation pages, a hundred checkpoint swaps for a 100-step run), and a
fixed `log_every: 50` leaves a two-point loss curve. With "auto" (the default of both keys):

- `train.log_every`: about LOG_POINTS points on the loss curve (every total_steps // 50 steps; 1 to 50);
- `train.epoch_end_every`: the epoch-end work every n-th epoch, n chosen for about EPOCH_ENDS of them in the run
  (every epoch when a run has fewer than 2 x EPOCH_ENDS epochs, as runs on real data sets do).

The end of training always validates and saves. An integer sets either exactly.
"""
from __future__ import annotations

import math

from epalm.common.errors import ConfigError

AUTO = "auto"
LOG_POINTS = 50
MAX_AUTO_LOG_EVERY = 50
EPOCH_ENDS = 10


def check_interval(key: str, value: int | str) -> None:
    if value == AUTO:
        return
    if isinstance(value, str) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key} must be a positive number of steps or 'auto', got {value!r}")


def log_interval(log_every: int | str, total_steps: int) -> int:
    """Steps between two loss records of train_log.jsonl."""
    if log_every == AUTO:
        return max(1, min(MAX_AUTO_LOG_EVERY, total_steps // LOG_POINTS))
    return int(log_every)


def epoch_end_interval(epoch_end_every: int | str, total_steps: int, steps_per_epoch: int) -> int:
    """Epochs between two epoch-end validations and saves of `checkpoints/last`."""
    if epoch_end_every == AUTO:
        epochs = math.ceil(total_steps / max(1, steps_per_epoch))
        return max(1, epochs // EPOCH_ENDS)
    return int(epoch_end_every)
