"""Resumable training state through accelerate's `save_state` / `load_state`, holding only trainable weights.

`checkpoints/last/` holds the model's trainable tensors (our checkpoint format, in `trainable/`), the
optimizer, scheduler, grad scaler, every process's RNG states and `TrainingProgress` (epoch, position in
the epoch, step, best metric). It is written to a temporary folder and renamed into place, so a run
killed at any moment leaves either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator

from models.checkpoint import load_checkpoint_weights, save_checkpoint
from models.epalm import EPALM

TRAINABLE_DIR = "trainable"


@dataclass
class TrainingProgress:
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of this epoch already consumed
    step: int = 0  # optimizer steps
    best_value: float | None = None
    best_epoch: int | None = None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def register_trainable_only_checkpointing(accelerator: Accelerator) -> None:
    """Make save_state / load_state write and read only the trainable tensors of the EPALM model."""

    def save_hook(models, weights, output_dir):
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            if isinstance(model, EPALM):
                if accelerator.is_main_process:
                    save_checkpoint(model, Path(output_dir) / TRAINABLE_DIR)
                weights.pop(index)  # nothing else of the frozen backbones is written

    def load_hook(models, input_dir):
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            if isinstance(model, EPALM):
                load_checkpoint_weights(model, Path(input_dir) / TRAINABLE_DIR)
                models.pop(index)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_progress(accelerator: Accelerator, checkpoints: Path) -> Path:
    """Every process calls this; the folder swap happens on the main process once all have written."""
    final = checkpoints / "last"
    tmp = checkpoints / "last.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = checkpoints / "last.old"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """`last`, or `last.old` when a run died between the two renames of a save."""
    for name in ("last", "last.old"):
        if (checkpoints / name / TRAINABLE_DIR).is_dir():
            return checkpoints / name
    return None
