"""Cheap checks of every path a run names, before anything slow (weights, encoders) is built."""
from __future__ import annotations

from pathlib import Path

from models.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from models.user_errors import MissingFileError
from training.run_config import RunConfig

REFERENCE_SUFFIXES = (".pth", ".pt", ".bin")


def check_checkpoint_path(checkpoint: str) -> None:
    """Our checkpoint folder (model.safetensors + epalm_config.json, e.g. a run's best/), a folder holding
    one (`trainable/`, a run's `checkpoints/last/`), or a reference `.pth` file."""
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise MissingFileError(f"--checkpoint {path}: a folder without {WEIGHTS_FILE}; expected our checkpoint "
                                   f"folder (a run's best/ or checkpoints/last/trainable/)")
        return
    if not path.exists():
        raise MissingFileError(f"--checkpoint {path}: no such file or folder")
    if path.suffix not in REFERENCE_SUFFIXES:
        raise MissingFileError(f"--checkpoint {path}: neither a checkpoint folder (with {WEIGHTS_FILE} and "
                               f"{CONFIG_FILE}) nor a reference eP-ALM file ({', '.join(REFERENCE_SUFFIXES)})")


def check_paths(cfg: RunConfig) -> None:
    if not Path(cfg.task.data_dir).is_dir():
        raise MissingFileError(f"data_dir {cfg.task.data_dir}: no such folder (set it with --data_dir)")
    if cfg.task.media_root and not Path(cfg.task.media_root).is_dir():
        raise MissingFileError(f"task.media_root {cfg.task.media_root}: no such folder")
    if cfg.checkpoint:
        check_checkpoint_path(cfg.checkpoint)
    encoder_checkpoint = cfg.model.encoder.checkpoint if cfg.model.visual else None
    if encoder_checkpoint and not Path(encoder_checkpoint).is_file():
        raise MissingFileError(f"model.encoder.checkpoint {encoder_checkpoint}: no such file")
