"""One run, top to bottom: resolve the config, check the paths it names, make the Accelerator, build the
model, load `--checkpoint`, read the splits, train (with validation each epoch), test.

`main.py` is the command-line entry point around `main()`; the demo, the ablation and the tests call
`main([...])` here (exceptions propagate; the command line turns user errors into one line).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from models.checkpoint import load_checkpoint_weights, load_reference_checkpoint
from models.factory import build_model
from models.param_count import parameter_report
from training.accelerator_setup import make_accelerator
from training.data import build_dataset, build_loader, read_split
from training.evaluator import evaluate_split
from training.feature_store import encoder_features
from training.preflight import check_paths
from training.run_config import RunConfig, dump_config, resolve_config
from training.trackers import check_tracker
from training.trainer import Trainer


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


def evaluation_runner(cfg: RunConfig, accelerator, model, tokenizer, run_dir: Path, splits: dict):
    """evaluate(split_name, name) -> metrics, with the split's loader built once."""
    loaders: dict[str, Any] = {}

    def evaluate(split_name: str, name: str) -> dict[str, Any]:
        split = splits[split_name]
        if split_name not in loaders:
            features = encoder_features(cfg, accelerator, model, split, run_dir)
            loaders[split_name] = accelerator.prepare_data_loader(
                build_loader(build_dataset(split, model, cfg, False, features), tokenizer, cfg, train=False))
        return evaluate_split(accelerator, model, loaders[split_name], tokenizer, split, cfg, run_dir / "eval", name)

    return evaluate


def read_splits(cfg: RunConfig) -> tuple[Any, dict[str, Any]]:
    """The training split (None with --evaluate) and the evaluation splits, read before any model is built:
    a missing or malformed annotation file is reported in seconds, not after minutes of loading weights."""
    final_split = cfg.task.test_split or cfg.task.val_split
    names = [final_split] if cfg.evaluate else [n for n in (cfg.task.val_split, final_split) if n]
    evaluation = {name: read_split(cfg, name, train=False) for name in dict.fromkeys(names) if name}
    train = None if cfg.evaluate else read_split(cfg, cfg.task.train_split, train=True)
    return train, evaluation


def run(cfg: RunConfig) -> dict[str, Any]:
    check_paths(cfg)
    check_tracker(cfg)
    train_split, eval_splits = read_splits(cfg)
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    run_dir = Path(cfg.output_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")

    model, tokenizer = build_model(cfg.model)
    load_initial_weights(model, cfg.checkpoint, accelerator.print)
    accelerator.print(parameter_report(model))
    model = model.to(accelerator.device)
    evaluate = evaluation_runner(cfg, accelerator, model, tokenizer, run_dir, eval_splits)
    final_split = cfg.task.test_split or cfg.task.val_split

    if cfg.evaluate:
        metrics = evaluate(final_split, f"{final_split}")
        accelerator.print(f"{final_split}: {metrics['main']}")
        return {"test": metrics}

    features = encoder_features(cfg, accelerator, model, train_split, run_dir)
    train_loader = build_loader(build_dataset(train_split, model, cfg, True, features), tokenizer, cfg, train=True)

    def validate(epoch: int) -> float | None:
        if not (cfg.task.val_split and cfg.eval.every_epoch):
            return None
        metrics = evaluate(cfg.task.val_split, f"{cfg.task.val_split}_epoch{epoch}")
        accelerator.print(f"epoch {epoch} {cfg.task.val_split}: {metrics['main']}")
        return metrics["main"]["value"]

    trainer = Trainer(cfg, accelerator, model, train_loader, run_dir, validate)
    if cfg.resume:
        trainer.resume()
    progress = trainer.fit()

    results: dict[str, Any] = {"steps": progress.step, "best_value": progress.best_value}
    if final_split:
        if cfg.save_best and progress.best_value is not None:
            load_checkpoint_weights(accelerator.unwrap_model(trainer.model), run_dir / "best")
            accelerator.print(f"testing the best checkpoint (epoch {progress.best_epoch})")
        results["test"] = evaluate(final_split, final_split)
        accelerator.print(f"{final_split}: {results['test']['main']}")
    accelerator.end_training()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Resolve `argv` (main.py's flags) and run; returns the test metrics and training progress."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(resolve_config(argv))
