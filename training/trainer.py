"""The training loop: accumulation, clipping, the schedule, per-epoch checkpoints and validation, resume,
stopping on preemption signals (training/preemption.py), experiment trackers (training/trackers.py)."""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Callable, NoReturn

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from epalm.common.errors import DataFormatError
from epalm.models.checkpoint import save_checkpoint
from epalm.training.loss import training_loss
from epalm.training.optim import build_optimizer, build_scheduler
from epalm.training.preemption import PreemptionWatch, StopRequested, stop_after_agreement
from epalm.training.run_config import RunConfig
from epalm.training.run_state import (
    TrainingProgress,
    latest_checkpoint,
    quiet_accelerate_logs,
    register_trainable_only_checkpointing,
    save_progress,
    state_kwargs,
    trainable_state,
)
from epalm.training.step_schedule import epoch_end_interval, log_interval
from epalm.training.trackers import start_trackers, tracker_values
from epalm.training.training_curves import plot_training_curves

# Set by tests to kill the process (SIGKILL, no clean-up) right after this optimizer step.
KILL_AT_STEP_ENV = "EPALM_KILL_AT_STEP"


class Trainer:
    """`fit()` trains for the configured steps; `validate(epoch)` returns the main validation metric or None."""

    def __init__(
        self,
        cfg: RunConfig,
        accelerator: Accelerator,
        model,
        train_loader,
        run_dir: Path,
        validate: Callable[[int], float | None],
        preemption: PreemptionWatch,
    ):
        self.cfg = cfg
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self.best_dir = run_dir / "best"
        self.validate = validate
        self.preemption = preemption
        self.progress = TrainingProgress()
        optimizer = build_optimizer(model, cfg.train)
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, train_loader)
        accum = cfg.train.grad_accum_steps
        self.steps_per_epoch = max(1, math.ceil(len(self.loader) / accum))
        self.total_steps = cfg.train.max_steps or self.steps_per_epoch * cfg.train.epochs
        self.log_every = log_interval(cfg.train.log_every, self.total_steps)
        self.epoch_end_every = epoch_end_interval(cfg.train.epoch_end_every, self.total_steps, self.steps_per_epoch)
        # Stepped by hand once per optimizer step (not prepared: accelerate would step it per process).
        self.scheduler = build_scheduler(self.optimizer, cfg.train, self.total_steps)
        accelerator.register_for_checkpointing(self.scheduler, self.progress)
        register_trainable_only_checkpointing(accelerator)
        self.log_path = run_dir / "train_log.jsonl"
        self.rows_trained, self.something_trained = 0, False  # samples of this process whose media were readable
        start_trackers(cfg, accelerator, run_dir)

    # --- state --------------------------------------------------------------------------------------
    def resume(self) -> bool:
        found = latest_checkpoint(self.checkpoints)
        if found is None:
            self.accelerator.print(f"--resume: no checkpoint under {self.checkpoints}, starting from scratch")
            return False
        with quiet_accelerate_logs():
            self.accelerator.load_state(str(found), **state_kwargs(self.accelerator, saving=False))
        self.accelerator.print(
            f"resumed from {found}: epoch {self.progress.epoch}, step {self.progress.step}, "
            f"{self.progress.batches_in_epoch} batches into the epoch"
        )
        return True

    def _save_best(self, value: float | None) -> None:
        if value is None:
            return
        best = self.progress.best_value
        if best is None or value > best:
            self.progress.best_value, self.progress.best_epoch = value, self.progress.epoch
            state = trainable_state(self.accelerator, self.model)
            if self.accelerator.is_main_process:
                save_checkpoint(self.accelerator.unwrap_model(self.model), self.best_dir, state=state,
                                extra={"best_value": value, "best_epoch": self.progress.epoch})
            self.accelerator.print(f"new best validation metric {value:.4f} (epoch {self.progress.epoch})")
        self.accelerator.wait_for_everyone()

    def _save_last(self) -> None:
        """`checkpoints/last`, announced in one line (accelerate's own INFO lines are quiet: run_state.py)."""
        path = save_progress(self.accelerator, self.checkpoints, self.model)
        if self.accelerator.is_main_process:  # above the progress bar, not inside it
            tqdm.write(f"checkpoint: step {self.progress.step}, epoch {self.progress.epoch} -> {path}")

    def _check_something_trained(self, skipped_media: set[str]) -> None:
        """A whole epoch in which no sample's media could be read (files that pass the check before training but
        fail to decode, e.g. truncated) trains nothing: stop with the reason, on every process alike."""
        if self.something_trained:
            return
        rows = self.accelerator.gather(torch.tensor([self.rows_trained], device=self.accelerator.device)).sum()
        self.something_trained = int(rows) > 0
        if not self.something_trained:
            examples = "; ".join(sorted(skipped_media)[:3]) or "no media were named"
            raise DataFormatError(f"no training sample could be read in a whole epoch, nothing was learnt: {examples}")

    # --- loop ---------------------------------------------------------------------------------------
    def _loss(self, batch) -> torch.Tensor:
        if batch["input_ids"].shape[0] == 0:
            # Every sample of this batch had unreadable media: a zero loss keeps all processes in step.
            return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
        train = self.cfg.train
        return training_loss(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                             media=batch.get("media"), features=batch.get("features"),
                             media_index=batch.get("media_index"),
                             reduction=train.loss_reduction, weight=train.lm_loss_weight)

    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        self.accelerator.log(tracker_values(record), step=record["step"])  # main process only (accelerate)

    def _stop_preempted(self, phase: str = "training") -> NoReturn:
        """Every process, at the step boundary (or evaluation batch) all agreed on: save the resumable state
        (unless this step's periodic save just did), mark the run as preempted, close the trackers, and stop."""
        acc, step = self.accelerator, self.progress.step
        every = self.cfg.train.checkpoint_every_steps
        checkpoint = self.checkpoints / "last"
        if phase != "training" or not (every and step % every == 0):
            checkpoint = save_progress(acc, self.checkpoints, self.model)
        record = {"step": step, "epoch": self.progress.epoch, "preempted": self.preemption.signal_name}
        self._log(record if phase == "training" else {**record, "during": phase})
        stop_after_agreement(acc, self.preemption, self.run_dir, step, checkpoint, phase)

    def _validate_epoch(self) -> None:
        """Validation at the end of an epoch (and of training), `best/`. Preempted during it: the state from
        before it is saved with `validation_pending`, and the resumed run validates first."""
        progress = self.progress
        progress.validation_pending = True
        try:
            value = self.validate(progress.epoch)
        except StopRequested:
            self._stop_preempted("validation")
        self.model.train()
        if value is not None:
            self._log({"step": progress.step, "epoch": progress.epoch, "val_metric": value})
        if self.cfg.save_best:
            self._save_best(value)
        progress.validation_pending = False

    def fit(self) -> TrainingProgress:
        """Train; on SIGTERM / SIGUSR1 save at the next step boundary (or evaluation batch) and raise
        TrainingPreempted."""
        if self.progress.validation_pending:  # a preemption stopped this validation: the resumed run does it first
            self._validate_epoch()
            self._save_last()
        return self._fit()

    def _fit(self) -> TrainingProgress:
        acc, cfg, progress = self.accelerator, self.cfg.train, self.progress
        skipped_media: set[str] = set()
        bar = tqdm(total=self.total_steps, initial=progress.step, desc="train", disable=not acc.is_local_main_process)
        self.model.train()
        while progress.step < self.total_steps:
            self.loader.set_epoch(progress.epoch)
            self.loader.dataset.set_epoch(progress.epoch)
            batches = acc.skip_first_batches(self.loader, progress.batches_in_epoch) if progress.batches_in_epoch else self.loader
            running, count = 0.0, 0
            for batch in batches:
                progress.batches_in_epoch += 1
                for message in batch["skipped"]:
                    if message not in skipped_media:
                        skipped_media.add(message)
                        acc.print(f"skipping unreadable media: {message}")
                self.rows_trained += batch["input_ids"].shape[0]
                with acc.accumulate(self.model):
                    loss = self._loss(batch)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                running, count = running + loss.detach().float().item(), count + 1
                if not acc.sync_gradients:
                    continue
                if not acc.optimizer_step_was_skipped:
                    self.scheduler.step()
                progress.step += 1
                bar.update(1)
                if progress.step % self.log_every == 0 or progress.step == self.total_steps:
                    lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
                    self._log({"step": progress.step, "epoch": progress.epoch, "loss": running / count, "lr": lrs})
                    bar.set_postfix(loss=f"{running / count:.4f}")
                    running, count = 0.0, 0
                if cfg.checkpoint_every_steps and progress.step % cfg.checkpoint_every_steps == 0:
                    self._save_last()
                if os.environ.get(KILL_AT_STEP_ENV) == str(progress.step):
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the resume tests
                # Not at the last step: the run is about to validate, save and end anyway.
                if progress.step < self.total_steps and self.preemption.stop_requested(progress.step):
                    self._stop_preempted()
                if progress.step >= self.total_steps:
                    break
            epoch_done = progress.step < self.total_steps or progress.batches_in_epoch >= len(self.loader)
            if epoch_done:
                progress.epoch += 1
                progress.batches_in_epoch = 0
            self._check_something_trained(skipped_media)  # an epoch ended, or the run did
            # The epoch-end work every epoch_end_every epochs (training/step_schedule.py), and at the end.
            if (epoch_done and progress.epoch % self.epoch_end_every == 0) or progress.step >= self.total_steps:
                self._validate_epoch()
                self._save_last()
        bar.close()
        if skipped_media:
            acc.print(f"{len(skipped_media)} unreadable media file(s) were skipped during training")
        if acc.is_main_process:
            plot_training_curves(self.log_path, self.run_dir / "training_curves.png")
        return progress
