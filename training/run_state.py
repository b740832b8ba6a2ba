"""Resumable training state through accelerate's `save_state` / `load_state`, holding only trainable weights.

`checkpoints/last/` holds the model's trainable tensors (our checkpoint format, in `trainable/`), the
optimizer, scheduler, grad scaler, every process's RNG states and `TrainingProgress` (epoch, position in
the epoch, step, best metric). It is written to a temporary folder and renamed into place, so a run
killed at any moment leaves either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file

from epalm.models.checkpoint import WEIGHTS_FILE, load_checkpoint_weights, save_checkpoint
from epalm.models.epalm import EPALM
from epalm.models.partitioned_params import gathered
from epalm.training.fsdp_units import gathered_trainable_state, load_trainable_state

TRAINABLE_DIR = "trainable"


@dataclass
class TrainingProgress:
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of this epoch already consumed
    step: int = 0  # optimizer steps
    best_value: float | None = None
    best_epoch: int | None = None
    validation_pending: bool = False  # preempted during this epoch's validation: the resumed run validates first

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def _uses_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def trainable_state(accelerator: Accelerator, model) -> dict:
    """The trainable tensors, whole on every process (ZeRO-3 and FSDP shard them: gather first)."""
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP:
        return gathered_trainable_state(model)
    if _uses_deepspeed(accelerator):
        params = [p for p in unwrapped.parameters() if p.requires_grad]
        with gathered(params):
            return {k: v.detach().clone() for k, v in unwrapped.trainable_state_dict().items()}
    return unwrapped.trainable_state_dict()


def load_trainable_into(accelerator: Accelerator, model, folder: Path) -> None:
    """Our checkpoint's weights into a prepared model (`best/` after training): under ZeRO-3 written into the
    gathered tensors and partitioned again, under FSDP into each unit's shards."""
    if accelerator.distributed_type == DistributedType.FSDP:
        load_trainable_state(model, load_file(str(Path(folder) / WEIGHTS_FILE)), source=str(folder))
        return
    unwrapped = accelerator.unwrap_model(model)
    with gathered([p for p in unwrapped.parameters() if p.requires_grad], modifier_rank=0):
        load_checkpoint_weights(unwrapped, folder)


def register_trainable_only_checkpointing(accelerator: Accelerator) -> None:
    """Make save_state / load_state write and read only the trainable tensors of the EPALM model.

    DDP / one process: the model's entry is taken out of accelerate's weights and written as our
    checkpoint (`trainable/`). DeepSpeed: the engine writes its own module and optimizer shards, told
    to leave the frozen parameters out (`state_kwargs`); `trainable/` is written beside them. FSDP:
    accelerate writes the model's sharded state, which holds only the trainable tensors
    (training/fsdp_units.py), and `trainable/` beside it."""

    def save_hook(models, weights, output_dir):
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            if isinstance(model, EPALM):
                state = trainable_state(accelerator, models[index])
                if accelerator.is_main_process:
                    save_checkpoint(model, Path(output_dir) / TRAINABLE_DIR, state=state)
                if index < len(weights):  # DeepSpeed and FSDP models are not in `weights`
                    weights.pop(index)  # nothing else of the frozen backbones is written

    def load_hook(models, input_dir):
        if _uses_deepspeed(accelerator) or accelerator.distributed_type == DistributedType.FSDP:
            return  # the engine (accelerate, for FSDP) has loaded the trainable tensors of its own files
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            if isinstance(model, EPALM):
                load_checkpoint_weights(model, Path(input_dir) / TRAINABLE_DIR)
                models.pop(index)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def state_kwargs(accelerator: Accelerator, saving: bool) -> dict:
    """DeepSpeed: leave frozen parameters out of its checkpoint, and do not require them when loading."""
    if not _uses_deepspeed(accelerator):
        return {}
    return {"exclude_frozen_parameters": True} if saving else {"load_module_strict": False}


@contextlib.contextmanager
def frozen_aliases_left_out(accelerator: Accelerator, model):
    """DeepSpeed drops frozen parameters from its checkpoint by their first name only, so a frozen weight
    reachable under a second name (OPT's output layer tied to its input embeddings) would be written
    anyway: during the save, leave out every name of every frozen parameter."""
    if not _uses_deepspeed(accelerator):
        yield
        return
    module = accelerator.unwrap_model(model)
    # remove_duplicate=False lists every name a tied parameter is reachable under.
    frozen = {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def drop_frozen(_module, state_dict, prefix, _metadata):
        for name in frozen:
            state_dict.pop(prefix + name, None)

    handle = module.register_state_dict_post_hook(drop_frozen)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def quiet_accelerate_logs():
    """accelerate logs half a dozen INFO lines per save_state / load_state (each file it writes); the trainer says
    one line per checkpoint instead. Its warnings still show."""
    logger = logging.getLogger("accelerate")
    level = logger.level
    logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        logger.setLevel(level)


def save_progress(accelerator: Accelerator, checkpoints: Path, model=None) -> Path:
    """Every process calls this; the folder swap happens on the main process once all have written."""
    final = checkpoints / "last"
    tmp = checkpoints / "last.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    with frozen_aliases_left_out(accelerator, model) if model is not None else contextlib.nullcontext(), \
            quiet_accelerate_logs():
        accelerator.save_state(str(tmp), **state_kwargs(accelerator, saving=True))
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
