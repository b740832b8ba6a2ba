"""Cheap checks of everything a run names, before anything slow (weights, encoders, annotation files) is
read: the values chosen from a fixed list (mixed_precision, loss_tokens, injection_mode, the task reader ...),
the models named (a local folder that is not there, a timm name timm does not know) and the paths (data_dir,
media_root, --checkpoint and what it holds, the encoder's checkpoint).

Each failure is a user error (epalm.common.errors) naming the key or the path, so a typo costs seconds.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from epalm.common.errors import (ConfigError, DataFormatError, MissingFileError, UnknownNameError, check_choice,
                                did_you_mean)
from epalm.common.registry import Registry
from epalm.dataset.collate import LOSS_TOKENS
from epalm.dataset.metrics.vqa_accuracy import VQA_VERSIONS
from epalm.dataset.tasks import TASK_READERS
from epalm.models.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, layout_mismatches, read_checkpoint_config,
                               read_reference_state, unknown_reference_keys)
from epalm.models.config import ModelConfig
from epalm.models.connectors import CONNECTORS
from epalm.models.encoders import ENCODERS
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.readouts import check_readout
from epalm.models.factory import PROMPT_INITS
from epalm.models.injection import MODES
from epalm.models.model_source import check_model_source
from epalm.training.accelerator_setup import PRECISIONS, resolve_precision
from epalm.training.loss import REDUCTIONS
from epalm.training.run_config import RunConfig
from epalm.training.scoring import METRICS

# Where a folder given as --checkpoint may hold the checkpoint meant: a run folder, a resumable state.
CHECKPOINT_SUBFOLDERS = ("best", "trainable", "checkpoints/last/trainable")
REFERENCE_SUFFIXES = (".pth", ".pt", ".bin")  # the reference's torch.save files


def check_registered(key: str, registry: Registry, name: str) -> None:
    try:
        registry.get(name)
    except UnknownNameError as error:
        raise UnknownNameError(f"{key}: {error}") from None


def check_reader_options(cfg: RunConfig) -> None:
    """Every `task.reader_options` key is an argument of the reader (a typo would be a TypeError later)."""
    parameters = inspect.signature(TASK_READERS.get(cfg.task.reader)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [name for name in parameters if name not in ("data_dir", "split")]
    for option in cfg.task.reader_options:
        if option not in known:
            raise ConfigError(f"task.reader_options: reader '{cfg.task.reader}' has no option '{option}'"
                              f"{did_you_mean(option, known)}; its options: {', '.join(known)}")


def check_choices(cfg: RunConfig) -> None:
    check_choice("mixed_precision", cfg.mixed_precision, PRECISIONS)
    resolve_precision(cfg.mixed_precision, torch.cuda.is_available())  # e.g. fp16 on a CPU machine
    check_choice("train.loss_tokens", cfg.train.loss_tokens, LOSS_TOKENS)
    check_choice("train.loss_reduction", cfg.train.loss_reduction, REDUCTIONS)
    check_choice("model.injection_mode", cfg.model.injection_mode, MODES)
    check_choice("model.prompt_init", cfg.model.prompt_init, PROMPT_INITS)
    check_choice("task.vqa_eval_version", cfg.task.vqa_eval_version, VQA_VERSIONS)
    if cfg.task.metric:
        check_choice("task.metric", cfg.task.metric, METRICS)
    check_registered("task.reader", TASK_READERS, cfg.task.reader)
    check_reader_options(cfg)
    if cfg.model.visual:
        check_registered("model.connector", CONNECTORS, cfg.model.connector)
        for key, encoder in encoder_sections(cfg):
            check_registered(f"{key}.type", ENCODERS, encoder.type)


def encoder_sections(cfg: RunConfig) -> list[tuple[str, EncoderConfig]]:
    """(config key, section) of every encoder."""
    return [(f"model.encoders.{modality}", encoder) for modality, encoder in cfg.model.encoders.items()]


def check_models(cfg: RunConfig) -> None:
    check_model_source("model.lm.name", cfg.model.lm.name)
    check_model_source("model.lm.tokenizer", cfg.model.lm.tokenizer)
    if not cfg.model.visual:
        return
    for key, encoder in encoder_sections(cfg):
        encoder_class = ENCODERS.get(encoder.type)
        if encoder_class.modality != key.rsplit(".", 1)[1]:
            raise ConfigError(f"{key}: type '{encoder.type}' reads {encoder_class.modality}, not "
                              f"{key.rsplit('.', 1)[1]} (name the section by its modality)")
        encoder_class.check_config(encoder, key)  # what each encoder can check cheaply (a timm name ...)
        # the readout its class can give (a timm ViT without a CLS token is only seen once built)
        check_readout(cfg.model.readout, None, encoder_class.readouts, None, f"{key} (type '{encoder.type}')")


def check_checkpoint_folder(path: Path, model: ModelConfig) -> None:
    """Our format (model.safetensors + epalm_config.json) saved from a model with the configured layout."""
    if not (path / WEIGHTS_FILE).is_file():
        inside = [path / sub for sub in CHECKPOINT_SUBFOLDERS if (path / sub / WEIGHTS_FILE).is_file()]
        hint = f" (did you mean `{inside[0]}`?)" if inside else ""
        raise MissingFileError(f"--checkpoint {path}: a folder without {WEIGHTS_FILE}{hint}; expected our checkpoint "
                               f"folder (a run's best/ or checkpoints/last/trainable/) or a reference .pth file")
    if not (path / CONFIG_FILE).is_file():
        raise MissingFileError(f"--checkpoint {path}: no {CONFIG_FILE} beside {WEIGHTS_FILE}; our checkpoint folders "
                               f"hold both (a run's best/ or checkpoints/last/trainable/)")
    mismatches = layout_mismatches(read_checkpoint_config(path), model)
    if mismatches:
        raise ConfigError(f"--checkpoint {path} was saved from a model with other trainable tensors; set these as "
                          f"the checkpoint has them (--set model.KEY=VALUE):\n" + "\n".join(mismatches))


def check_reference_file(path: Path) -> None:
    """A reference eP-ALM `.pth`: readable with weights_only, a `model` dict of connection and prompt tensors.
    (The shapes are checked against the model once it is built.)"""
    if path.name == WEIGHTS_FILE or path.suffix == ".safetensors":
        raise DataFormatError(f"--checkpoint {path}: give the folder that holds it ({path.parent}), not the file")
    state, _ = read_reference_state(path)
    unknown = unknown_reference_keys(state)
    if unknown:
        raise DataFormatError(f"--checkpoint {path}: not an eP-ALM checkpoint: it holds tensors other than the "
                              f"connection and the soft prompt, e.g. {unknown[:5]}")


def check_checkpoint(checkpoint: str, model: ModelConfig) -> None:
    path = Path(checkpoint)
    if path.is_dir():
        check_checkpoint_folder(path, model)
    elif path.is_file():
        check_reference_file(path)
    else:
        raise MissingFileError(f"--checkpoint {path}: no such file or folder")


def bridge_checkpoint_folder(path: Path) -> Path:
    """`--init_from`: a checkpoint folder, or a run folder's best/ (else its last checkpoint)."""
    if (path / WEIGHTS_FILE).is_file():
        return path
    for sub in CHECKPOINT_SUBFOLDERS:
        if (path / sub / WEIGHTS_FILE).is_file():
            return path / sub
    if not path.exists():
        raise MissingFileError(f"--init_from {path}: no such folder")
    raise MissingFileError(f"--init_from {path}: neither a checkpoint folder ({WEIGHTS_FILE}) nor a run folder "
                           f"with {', '.join(CHECKPOINT_SUBFOLDERS)}")


def check_init_from(cfg: RunConfig) -> None:
    """The earlier run's bridge has the configured bridge's layout (its LM's training may differ)."""
    folder = bridge_checkpoint_folder(Path(cfg.init_from))
    if not (folder / CONFIG_FILE).is_file():
        raise MissingFileError(f"--init_from {folder}: no {CONFIG_FILE} beside {WEIGHTS_FILE}")
    mismatches = [m for m in layout_mismatches(read_checkpoint_config(folder), cfg.model)
                  if not m.startswith("model.lm.")]
    if mismatches:
        raise ConfigError(f"--init_from {folder} holds another bridge; set these as the earlier run had them "
                          f"(--set model.KEY=VALUE):\n" + "\n".join(mismatches))


def check_paths(cfg: RunConfig) -> None:
    if not Path(cfg.task.data_dir).is_dir():
        raise MissingFileError(f"data_dir {cfg.task.data_dir}: no such folder (set it with --data_dir)")
    if cfg.task.media_root and not Path(cfg.task.media_root).is_dir():
        raise MissingFileError(f"task.media_root {cfg.task.media_root}: no such folder")
    if cfg.checkpoint:
        check_checkpoint(cfg.checkpoint, cfg.model)
    if cfg.init_from:
        check_init_from(cfg)
    for key, encoder in encoder_sections(cfg) if cfg.model.visual else []:
        if encoder.checkpoint and not Path(encoder.checkpoint).is_file():
            raise MissingFileError(f"{key}.checkpoint {encoder.checkpoint}: no such file")


def check_save_best(cfg: RunConfig) -> None:
    """--save_best keeps the checkpoint of the best validation: without a validation it would do nothing."""
    if not cfg.save_best or cfg.evaluate:
        return
    tasks = [entry.task for entry in cfg.mixture.values()] if cfg.mixture else [cfg.task]
    if not any(task.val_split for task in tasks):
        key = "mixture.<name>.task.val_split" if cfg.mixture else "task.val_split"
        raise ConfigError(f"--save_best keeps the checkpoint with the best validation metric, but there is no "
                          f"validation split: set {key} (e.g. --set {key}=val; the demo configs leave it empty) "
                          "or drop --save_best")
    if not cfg.eval.every_epoch:
        raise ConfigError("--save_best keeps the checkpoint with the best validation metric, but eval.every_epoch "
                          "is false (no validation during training): set it to true or drop --save_best")


def preflight(cfg: RunConfig) -> None:
    """Everything that can be checked without loading a model or reading a data set."""
    check_choices(cfg)
    check_models(cfg)
    check_paths(cfg)
    check_save_best(cfg)
