"""What `--checkpoint` names for the chat and predict commands, checked, then loaded as a ready model.

Three sources:
- a run folder (it has `config.yaml`): the weights of `best/` when present, else `checkpoints/last/trainable/`;
- a checkpoint folder of ours (`model.safetensors` + `epalm_config.json`; `checkpoints/last/` too, which holds
  one in `trainable/`); a run's `config.yaml` above it (`<run>/best`, `<run>/checkpoints/last/trainable`)
  gives the task and eval sections, otherwise they are the defaults;
- a released reference `.pth` file, with `--config` (YAML files, as for main.py) to build the model it fits.

Every path is checked before anything slow is built; each problem is a user error naming the path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import set_seed

from epalm.common.config_io import from_dict
from epalm.common.errors import ConfigError, DataFormatError, MissingFileError
from epalm.models.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint_weights,
    load_reference_checkpoint,
    read_checkpoint_config,
)
from epalm.models.config import translate_legacy_encoders
from epalm.models.epalm import EPALM
from epalm.models.factory import build_model
from epalm.training.preflight import REFERENCE_SUFFIXES
from epalm.training.run_config import RunConfig, resolve_config
from epalm.training.run_state import TRAINABLE_DIR

RUN_CONFIG = "config.yaml"


@dataclass(frozen=True)
class CheckpointSource:
    """kind: "run", "folder" or "reference"; weights: the checkpoint folder or the `.pth` file;
    run_config: the run's config.yaml when there is one."""

    kind: str
    weights: Path
    run_config: Path | None


@dataclass
class LoadedModel:
    """The model in eval mode on its device, its tokenizer, the run config (task and eval sections: defaults
    where the source has none), and what was loaded from where."""

    model: EPALM
    tokenizer: Any
    cfg: RunConfig
    source: CheckpointSource
    device: torch.device

    @property
    def chat_trained(self) -> bool:
        """Trained on chat rows (several media, placeholders in the text) rather than the reference formats."""
        return self.cfg.task.reader == "chat"


def _is_checkpoint_folder(path: Path) -> bool:
    return (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def _run_config_above(folder: Path) -> Path | None:
    """The config.yaml of the run holding `folder` as `best/` or `checkpoints/last/trainable/`."""
    for run in (folder.parent, folder.parent.parent.parent):
        weights = {(run / "best").resolve(), (run / "checkpoints" / "last" / TRAINABLE_DIR).resolve()}
        if (run / RUN_CONFIG).is_file() and folder.resolve() in weights:
            return run / RUN_CONFIG
    return None


def _run_weights(run: Path) -> Path:
    for folder in (run / "best", run / "checkpoints" / "last" / TRAINABLE_DIR):
        if _is_checkpoint_folder(folder):
            return folder
    raise MissingFileError(f"--checkpoint {run}: a run folder without weights: neither best/{WEIGHTS_FILE} nor "
                           f"checkpoints/last/{TRAINABLE_DIR}/{WEIGHTS_FILE} (has the run saved a checkpoint yet?)")


def find_source(checkpoint: str, config_files: list[str]) -> CheckpointSource:
    """Classify and check `--checkpoint` (and `--config`, which only a reference `.pth` takes)."""
    path = Path(checkpoint)
    if not path.exists():
        raise MissingFileError(f"--checkpoint {path}: no such file or folder")
    if path.is_dir():
        if config_files:
            raise ConfigError(f"--config is for a reference .pth file; {path} carries its own model config")
        if (path / RUN_CONFIG).is_file():
            return CheckpointSource("run", _run_weights(path), path / RUN_CONFIG)
        for folder in (path, path / TRAINABLE_DIR):
            if _is_checkpoint_folder(folder):
                return CheckpointSource("folder", folder, _run_config_above(folder))
        raise MissingFileError(f"--checkpoint {path}: a folder that is neither a run folder (with {RUN_CONFIG}) nor "
                               f"a checkpoint folder (with {WEIGHTS_FILE} and {CONFIG_FILE})")
    if path.suffix not in REFERENCE_SUFFIXES:
        raise MissingFileError(f"--checkpoint {path}: neither a run folder, a checkpoint folder nor a reference "
                               f"eP-ALM file ({', '.join(REFERENCE_SUFFIXES)})")
    if not config_files:
        raise ConfigError(f"--checkpoint {path} is a reference eP-ALM file, which holds no model config: give the "
                          f"config it was trained with, e.g. --config configs/image/epalm_pt_l_vqa.yaml")
    return CheckpointSource("reference", path, None)


def read_run_config(path: Path) -> RunConfig:
    try:
        values = yaml.safe_load(path.read_text()) or {}
        if isinstance(values.get("model"), dict):
            values["model"] = translate_legacy_encoders(values["model"], str(path))
        return from_dict(RunConfig, values)
    except (yaml.YAMLError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"{path}: not a run config this version reads ({error})") from None


def run_config_of(source: CheckpointSource, config_files: list[str]) -> RunConfig:
    if source.kind == "reference":
        return resolve_config([arg for path in config_files for arg in ("--config", path)])
    return read_run_config(source.run_config) if source.run_config else RunConfig()


def _build(source: CheckpointSource, cfg: RunConfig) -> tuple[EPALM, Any]:
    # Seeded as epalm.training.run seeds it: frozen parts built with random_init (tests) come out the same.
    set_seed(cfg.seed)
    model_cfg = cfg.model if source.kind == "reference" else read_checkpoint_config(source.weights)
    model, tokenizer = build_model(model_cfg)
    try:  # a file whose tensors do not fit the model (shapes listed by the loaders) is the user's to fix
        if source.kind == "reference":
            load_reference_checkpoint(model, source.weights)
        else:
            load_checkpoint_weights(model, source.weights)
    except ValueError as error:
        raise DataFormatError(str(error)) from None
    return model, tokenizer


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here")
    return torch.device(name)


def load_model(checkpoint: str, config_files: list[str] | None = None, device: str = "auto") -> LoadedModel:
    """Check the paths, read the run config, build the model and load its weights (eval mode, on `device`)."""
    config_files = list(config_files or [])
    source = find_source(checkpoint, config_files)
    cfg = run_config_of(source, config_files)
    target = pick_device(device)
    model, tokenizer = _build(source, cfg)
    model.to(target).eval()
    return LoadedModel(model, tokenizer, cfg, source, target)


def describe(loaded: LoadedModel) -> str:
    """Two lines for the REPL's header: where the weights came from, and what the model is."""
    model, cfg, source = loaded.model, loaded.cfg, loaded.source
    origin = {"run": f"run folder, weights {source.weights}", "folder": f"checkpoint folder {source.weights}",
              "reference": f"reference checkpoint {source.weights}"}[source.kind]
    bridge = model.describe_bridge()
    reads = ", ".join(model.modalities) or "no media"
    trained = f"task reader {cfg.task.reader}" if source.run_config or source.kind == "reference" else "no run config"
    return (f"{origin}\nLM {model.config.lm.name}, reads {reads}, {bridge}; {trained} "
            f"({'chat' if loaded.chat_trained else 'reference'} layout)")


def add_model_arguments(parser) -> None:
    """--checkpoint, --config, --device: the flags that say which model to load (chat and predict)."""
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder (its best/ if present, else checkpoints/last/trainable/), a checkpoint "
                             "folder (model.safetensors + epalm_config.json), or a reference eP-ALM .pth file")
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="for a reference .pth only: the run config(s) that build the model it fits "
                             "(repeat to layer several, as for main.py)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
