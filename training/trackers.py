"""Experiment trackers through accelerate (`train.log_with`: none | tensorboard | wandb), beside train_log.jsonl.

accelerate drops a tracker whose package is missing without a word; `check_tracker` makes that a user
error before anything slow is built. The run's resolved configuration is logged as the tracker's
hyperparameters, and every `train_log.jsonl` record's numbers go to the tracker at the same step.
TensorBoard writes under `<output_dir>/tensorboard/<project>/`, W&B under `<output_dir>/wandb/` (set
WANDB_MODE=offline where there is no network, and `wandb sync` the folder later).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, is_tensorboard_available, is_wandb_available

from epalm.common.config_io import to_dict
from epalm.common.errors import ConfigError, did_you_mean
from epalm.training.run_config import RunConfig

NO_TRACKER = "none"
# name -> (what to install, is it installed)
TRACKERS = {
    "tensorboard": ("`tensorboard` (or `tensorboardX`)", is_tensorboard_available),
    "wandb": ("`wandb`", is_wandb_available),
}


def check_tracker(cfg: RunConfig) -> None:
    name = cfg.train.log_with
    if name == NO_TRACKER:
        return
    if name not in TRACKERS:
        raise ConfigError(f"train.log_with: '{name}' is not one of {[NO_TRACKER, *TRACKERS]}"
                          f"{did_you_mean(name, [NO_TRACKER, *TRACKERS])}")
    package, installed = TRACKERS[name]
    if not installed():
        raise ConfigError(f"train.log_with: {name} needs the {package} package, which is not installed: "
                          "pip install -e '.[trackers]' (or set train.log_with=none)")


def tracker_arguments(cfg: RunConfig) -> dict[str, Any]:
    """The Accelerator's keyword arguments for the configured tracker (none: no arguments)."""
    if cfg.train.log_with == NO_TRACKER:
        return {}
    run_dir = Path(cfg.output_dir)
    return {"log_with": cfg.train.log_with,
            "project_config": ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "tensorboard"))}


def start_trackers(cfg: RunConfig, accelerator: Accelerator, run_dir: Path) -> None:
    """On the main process (accelerate's own rule): open the tracker's run and log the configuration."""
    if cfg.train.log_with == NO_TRACKER:
        return
    run_name = run_dir.resolve().name
    accelerator.init_trackers(cfg.train.tracker_project or run_name, config=flat_config(cfg),
                              init_kwargs={"wandb": {"dir": str(run_dir), "name": run_name}})


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """`{"train.lr": 0.0002, ...}`: trackers' hyperparameter tables take flat scalars (lists and maps as text)."""
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (bool, int, float, str)):
                flat[prefix + key] = value
            else:
                flat[prefix + key] = str(value)

    walk(to_dict(cfg), "")
    return flat


def tracker_values(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a train_log.jsonl record, nested maps flattened: {"loss": .., "lr/connector": ..}."""
    values: dict[str, float] = {}
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, dict):
            values.update({f"{key}/{name}": v for name, v in value.items() if _is_number(v)})
        elif _is_number(value):
            values[key] = value
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
