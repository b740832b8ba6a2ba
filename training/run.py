"""One run, top to bottom: resolve the config, check the paths it names, read the splits, make the Accelerator,
build the model, load `--checkpoint`, train (with validation each epoch), test.

A run trains on one task (`task`), or on several at once (`mixture`: joint training, training/mixture.py),
evaluating each. `main.py` is the command-line entry point around `main()`; the demo, the ablation and the
tests call `main([...])` here (exceptions propagate; the command line turns user errors into one line).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from accelerate.utils import set_seed

from epalm.common.atomic_io import write_text_atomic
from epalm.models.checkpoint import load_bridge_weights, load_checkpoint_weights, load_reference_checkpoint
from epalm.models.factory import build_model
from epalm.models.modalities import load_plugins
from epalm.models.param_count import count_parameters, parameter_report
from epalm.training.accelerator_setup import make_accelerator, place_on_device, prepare_for_evaluation
from epalm.training.data import build_dataset, build_loader, make_collator, read_split
from epalm.training.evaluator import evaluate_split
from epalm.training.feature_store import encoder_features
from epalm.training.fsdp_units import use_epalm_units
from epalm.training.mixture import mixture_loader
from epalm.training.preemption import (
    PreemptionWatch,
    StopRequested,
    clear_preempted_marker,
    stop_after_agreement,
    stop_in_setup,
)
from epalm.training.preflight import bridge_checkpoint_folder, preflight
from epalm.training.run_config import RunConfig, dump_config, resolve_config
from epalm.training.run_state import load_trainable_into
from epalm.training.scoring import metric_reason
from epalm.training.trackers import check_tracker
from epalm.training.trainer import Trainer


def load_initial_weights(model, checkpoint: str | None, say) -> None:
    """Our checkpoint folder (or a run folder's best/), or a reference eP-ALM `.pth`."""
    if not checkpoint:
        return
    path = Path(checkpoint)
    if path.is_dir():
        load_checkpoint_weights(model, path)
    else:
        facts = load_reference_checkpoint(model, path)
        say(f"loaded reference checkpoint {path}: {facts}")
    say(f"initial weights from {path}")


def task_runs(cfg: RunConfig) -> dict[str, RunConfig]:
    """{task name: the run config with that task}: the mixture's tasks, or the one task (named by its reader)."""
    if not cfg.mixture:
        return {cfg.task.reader: cfg}
    return {name: dataclasses.replace(cfg, task=entry.task) for name, entry in cfg.mixture.items()}


def final_split_name(cfg: RunConfig) -> str:
    return cfg.task.test_split or cfg.task.val_split


def read_splits(cfg: RunConfig) -> tuple[Any, dict[str, Any]]:
    """The training split (None with --evaluate) and the evaluation splits, read before any model is built:
    a missing or malformed annotation file is reported in seconds, not after minutes of loading weights."""
    final_split = final_split_name(cfg)
    names = [final_split] if cfg.evaluate else [n for n in (cfg.task.val_split, final_split) if n]
    train = None if cfg.evaluate else read_split(cfg, cfg.task.train_split, train=True)  # first: can it learn?
    evaluation = {name: read_split(cfg, name, train=False) for name in dict.fromkeys(names) if name}
    return train, evaluation


def validates(cfg: RunConfig) -> bool:
    return bool(cfg.task.val_split and cfg.eval.every_epoch)


def evaluated_splits(cfg: RunConfig) -> list[str]:
    """The splits a run evaluates: the validation split each epoch (when it trains and validates), the final one."""
    names = [cfg.task.val_split] if validates(cfg) and not cfg.evaluate else []
    return [name for name in dict.fromkeys([*names, final_split_name(cfg)]) if name]


class TaskEvaluator:
    """evaluate(split_name, name, phase) -> metrics of one task, with each split's loader built once; the run can
    stop between two of its batches on a preemption signal (phase: validation or test)."""

    def __init__(self, cfg: RunConfig, accelerator, model, tokenizer, out_dir: Path, run_dir: Path, splits: dict,
                 preemption: PreemptionWatch):
        self.cfg, self.accelerator, self.model, self.tokenizer = cfg, accelerator, model, tokenizer
        self.out_dir, self.run_dir, self.splits, self.preemption = out_dir, run_dir, splits, preemption
        self.loaders: dict[str, Any] = {}

    def prepare(self, split_name: str) -> None:
        """The split's loader (its features encoded into the cache when the cache is on)."""
        if split_name not in self.loaders:
            cfg, split = self.cfg, self.splits[split_name]
            metric, why = metric_reason(cfg.task.reader, split, cfg.task.metric)
            self.accelerator.print(f"{split.task} {split_name}: metric {metric} ({why})")
            features = encoder_features(cfg, self.accelerator, self.model, split, self.run_dir)
            self.loaders[split_name] = self.accelerator.prepare_data_loader(
                build_loader(build_dataset(split, self.model, cfg, False, features), self.tokenizer, cfg, train=False,
                             tokens_per_instance=self.model.positions_per_instance))

    def __call__(self, split_name: str, name: str, phase: str) -> dict[str, Any]:
        self.prepare(split_name)
        return evaluate_split(self.accelerator, self.model, self.loaders[split_name], self.tokenizer,
                              self.splits[split_name], self.cfg, self.out_dir, name,
                              between_batches=lambda: self.preemption.check_between_batches(phase))


def training_loader(cfg: RunConfig, tasks: dict[str, RunConfig], train_splits: dict, accelerator, model, tokenizer,
                    run_dir: Path):
    """The one task's loader, or the mixture's (batches of one task each, drawn by weight)."""
    datasets = {}
    for name, task_cfg in tasks.items():
        features = encoder_features(task_cfg, accelerator, model, train_splits[name], run_dir)
        datasets[name] = build_dataset(train_splits[name], model, task_cfg, True, features)
    if not cfg.mixture:
        (name,) = tasks
        return build_loader(datasets[name], tokenizer, cfg, train=True,
                            tokens_per_instance=model.positions_per_instance)
    collators = {name: make_collator(datasets[name].split.kind, tokenizer, task_cfg, True, model.positions_per_instance)
                 for name, task_cfg in tasks.items()}
    weights = {name: entry.weight for name, entry in cfg.mixture.items()}
    return mixture_loader(datasets, collators, weights, cfg.train.batch_size, cfg.seed, cfg.train.num_workers,
                          pin_memory=torch.cuda.is_available())


def write_task_table(run_dir: Path, results: dict[str, dict[str, Any]], tasks: dict[str, RunConfig],
                     splits: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per task: its modality, metric and value; `eval/tasks.json` and `eval/tasks.md` (by modality)."""
    rows = []
    for name, metrics in results.items():
        split = splits[name][final_split_name(tasks[name])]
        rows.append({"task": name, "modality": split.modality, "metric": metrics["main"]["name"],
                     "value": metrics["main"]["value"], "split": split.split})
    rows.sort(key=lambda row: (row["modality"], row["task"]))
    lines = ["| modality | task | metric | value |", "|---|---|---|---|"]
    lines += [f"| {r['modality']} | {r['task']} | {r['metric']} | "
              f"{'-' if r['value'] is None else format(r['value'], '.4g')} |" for r in rows]
    write_text_atomic(run_dir / "eval" / "tasks.json", json.dumps(rows, indent=2))
    write_text_atomic(run_dir / "eval" / "tasks.md", "\n".join(lines) + "\n")
    return rows


def run(cfg: RunConfig) -> dict[str, Any]:
    """The run, under a preemption watch from its first line to its last (training/preemption.py)."""
    with PreemptionWatch() as watch:
        return _run(cfg, watch)


def _run(cfg: RunConfig, watch: PreemptionWatch) -> dict[str, Any]:
    run_dir = Path(cfg.output_dir)
    tasks = task_runs(cfg)
    trainer: Trainer | None = None

    def test() -> dict[str, dict[str, Any]]:
        results = {}
        try:
            for name, task_cfg in tasks.items():
                final_split = final_split_name(task_cfg)
                if final_split:
                    results[name] = evaluators[name](final_split, final_split, "test")
                    accelerator.print(f"{name} {final_split}: {results[name]['main']}")
        except StopRequested:  # training (if any) is over and saved: a resumed run tests again
            step = trainer.progress.step if trainer else None
            stop_after_agreement(accelerator, watch, run_dir, step, trainer and trainer.checkpoints / "last", "test")
        return results

    def with_tests(results: dict[str, Any], tests: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if cfg.mixture:
            results["tests"] = tests
            if accelerator.is_main_process and tests:
                results["table"] = write_task_table(run_dir, tests, tasks, splits)
        elif tests:
            results["test"] = next(iter(tests.values()))
        return results

    def validate(epoch: int) -> float | None:
        """The main validation metric (a mixture's: the mean of its tasks' main metrics)."""
        values = []
        for name, task_cfg in tasks.items():
            if validates(task_cfg):
                metrics = evaluators[name](task_cfg.task.val_split, f"{task_cfg.task.val_split}_epoch{epoch}",
                                           "validation")
                accelerator.print(f"epoch {epoch} {name} {task_cfg.task.val_split}: {metrics['main']}")
                values.append(metrics["main"]["value"])
        return mean(values) if values and None not in values else None

    try:
        with watch.at_once():  # setup: a signal stops the process where it is, with nothing to save
            load_plugins(cfg.model.plugins)  # before the data: a plugin's modality names its placeholder and data key
            for task_cfg in tasks.values():
                preflight(task_cfg)
            check_tracker(cfg)
            splits, train_splits = {}, {}
            for name, task_cfg in tasks.items():
                train_splits[name], splits[name] = read_splits(task_cfg)
            accelerator = watch.accelerator = make_accelerator(cfg)
            set_seed(cfg.seed)
            if accelerator.is_main_process:
                run_dir.mkdir(parents=True, exist_ok=True)
                dump_config(cfg, run_dir / "config.yaml")

            model, tokenizer = build_model(cfg.model)
            watch.inject("setup")
            load_initial_weights(model, cfg.checkpoint, accelerator.print)
            if cfg.init_from:  # a second stage: the earlier run's bridge, whatever its LM trained as
                folder = bridge_checkpoint_folder(Path(cfg.init_from))
                accelerator.print(load_bridge_weights(model, folder).describe(folder))
            accelerator.print(parameter_report(model))
            parameters = dataclasses.asdict(count_parameters(model))  # {trainable, total}, returned with the results
            use_epalm_units(accelerator, model)  # FSDP: shard per component (no-op under other engines)
            place_on_device(accelerator, model)
            if cfg.evaluate:  # a model its engine shards (ZeRO-3, FSDP) is wrapped by it to be evaluated
                model = prepare_for_evaluation(accelerator, model, cfg.eval.batch_size)
            evaluators = {name: TaskEvaluator(task_cfg, accelerator, model, tokenizer,
                                              run_dir / "eval" / name if cfg.mixture else run_dir / "eval", run_dir,
                                              splits[name], watch)
                          for name, task_cfg in tasks.items()}
            if not cfg.evaluate:
                train_loader = training_loader(cfg, tasks, train_splits, accelerator, model, tokenizer, run_dir)
                trainer = Trainer(cfg, accelerator, model, train_loader, run_dir, validate, watch)
            for name, task_cfg in tasks.items():  # their feature caches filled now, not minutes into training
                for split_name in evaluated_splits(task_cfg):
                    evaluators[name].prepare(split_name)
            if trainer and cfg.resume:
                trainer.resume()
    except StopRequested:
        stop_in_setup(watch, run_dir, run_dir / "checkpoints")
    if accelerator.is_main_process:
        clear_preempted_marker(run_dir)

    if cfg.evaluate:
        return with_tests({"parameters": parameters}, test())
    progress = trainer.fit()
    results: dict[str, Any] = {"steps": progress.step, "best_value": progress.best_value, "parameters": parameters}
    if cfg.save_best and progress.best_value is not None:
        load_trainable_into(accelerator, trainer.model, run_dir / "best")
        accelerator.print(f"testing the best checkpoint (epoch {progress.best_epoch})")
    results = with_tests(results, test())
    accelerator.end_training()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Resolve `argv` (main.py's flags) and run; returns the test metrics and training progress."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(resolve_config(argv))
    finally:
        # A process group left to the interpreter's exit can abort it ("terminate called without an active
        # exception": gloo's threads outlive Python's teardown), turning a finished run's exit status into 134.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
