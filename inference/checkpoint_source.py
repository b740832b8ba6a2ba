"""What `--checkpoint` (or `Bridge.load`) names, checked, then loaded as a ready model.

Four sources:
- a run folder (it has `config.yaml`): the weights of `best/` when present, else `checkpoints/last/trainable/`;
- a checkpoint folder of ours (`model.safetensors` + `epalm_config.json`; `checkpoints/last/` too, which holds
  one in `trainable/`); a run's `config.yaml` above it (`<run>/best`, `<run>/checkpoints/last/trainable`)
  gives the task and eval sections, otherwise they are the defaults;
- an exported folder (`main.py export`: a checkpoint folder with `run_config.yaml`, the task and eval sections);
- a released reference `.pth` file, with `--config` (YAML files, as for main.py) to build the model it fits,
  read with the reference's inputs (configs/compat/reference_eval*.yaml layered last) unless told otherwise.

Every path is checked before anything slow is built; each problem is a user error naming the path.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import set_seed

from epalm.common.config_io import from_dict
from epalm.common.errors import ConfigError, DataFormatError, MissingFileError
from epalm.inference.task_kinds import task_config_for, task_kind
from epalm.models.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint_weights,
    load_reference_checkpoint,
    read_checkpoint_config,
)
from epalm.models.config import ModelConfig, translate_legacy_encoders
from epalm.models.epalm import EPALM
from epalm.models.factory import build_model
from epalm.models.language_models.frozen_lm import DTYPES
from epalm.models.language_models.tokenizer import QA_SEPARATOR
from epalm.training.preflight import REFERENCE_SUFFIXES
from epalm.training.run_config import RunConfig, resolve_config
from epalm.training.run_state import TRAINABLE_DIR

RUN_CONFIG = "config.yaml"
EXPORTED_RUN_CONFIG = "run_config.yaml"  # an exported folder's task and eval sections (inference/export.py)
EXPORT_MANIFEST = "bridge.json"  # an exported folder's names, tokenizer additions, steps, metrics
COMPAT_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "compat"
# The reference's evaluation inputs by the model's main modality (configs/compat/*.yaml, docs/evaluation.md).
REFERENCE_INPUTS = {"image": "reference_eval.yaml", "video": "reference_eval_video.yaml",
                    "audio": "reference_eval_audio.yaml"}
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class CheckpointSource:
    """kind: "run", "folder", "export" or "reference"; weights: the checkpoint folder or the `.pth` file;
    run_config: the run's config.yaml (an export's run_config.yaml) when there is one."""

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
        return self.cfg.task.reader == "chat" and not self.cfg.mixture

    def task_config(self, modality: str | None) -> RunConfig:
        """The run config whose task section is the one `modality` was trained on (a joint run's mixture entry
        reading it; the run's own task section otherwise)."""
        return task_config_for(self.cfg, modality)

    def kind(self, modality: str | None) -> str:
        """How a one-instance prompt of `modality` is read and its answer ends: "qa" or "caption"."""
        return task_kind(self.task_config(modality).task.reader)


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
        if _is_checkpoint_folder(path) and (path / EXPORTED_RUN_CONFIG).is_file():
            return CheckpointSource("export", path, path / EXPORTED_RUN_CONFIG)
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


def reference_inputs_file(cfg: RunConfig) -> Path:
    """configs/compat's overlay for the main modality of `cfg`'s model (the modality-independent part for a
    modality the reference never had)."""
    main = next(iter(cfg.model.encoders), None)
    path = COMPAT_CONFIGS / REFERENCE_INPUTS.get(main, "reference_inputs.yaml")
    if not path.is_file():
        raise MissingFileError(f"{path}: the reference's inputs for a .pth are read from the repository's "
                               f"configs/compat/ (not installed here): give them with --config, or read the "
                               f"checkpoint with this project's defaults (--our_defaults)")
    return path


def run_config_of(source: CheckpointSource, config_files: list[str], reference_inputs: bool = True) -> RunConfig:
    """The run config: the run's (the defaults without one); a `.pth`'s from `config_files`, then, unless
    `reference_inputs` is False, the reference's evaluation inputs layered on top."""
    if source.kind == "reference":
        argv = [arg for path in config_files for arg in ("--config", path)]
        cfg = resolve_config(argv)
        return resolve_config([*argv, "--config", str(reference_inputs_file(cfg))]) if reference_inputs else cfg
    return read_run_config(source.run_config) if source.run_config else RunConfig()


def with_dtype(model_cfg: ModelConfig, dtype: str) -> ModelConfig:
    """The frozen weights held in `dtype` ("auto": as the checkpoint's config says; a fully trained LM stays
    float32 here and is cast once loaded)."""
    if dtype not in DTYPE_CHOICES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {', '.join(DTYPE_CHOICES)}")
    if dtype == "auto":
        return model_cfg
    lm = model_cfg.lm if model_cfg.lm.train == "full" else dataclasses.replace(model_cfg.lm, dtype=dtype)
    encoders = {name: dataclasses.replace(encoder, dtype=dtype) for name, encoder in model_cfg.encoders.items()}
    return dataclasses.replace(model_cfg, lm=lm, encoders=encoders)


def build_from_source(source: CheckpointSource, cfg: RunConfig, dtype: str = "auto") -> tuple[EPALM, Any]:
    # Seeded as epalm.training.run seeds it: frozen parts built with random_init (tests) come out the same.
    set_seed(cfg.seed)
    model_cfg = cfg.model if source.kind == "reference" else read_checkpoint_config(source.weights)
    model, tokenizer = build_model(with_dtype(model_cfg, dtype))
    try:  # a file whose tensors do not fit the model (shapes listed by the loaders) is the user's to fix
        if source.kind == "reference":
            load_reference_checkpoint(model, source.weights)
        else:
            load_checkpoint_weights(model, source.weights)
    except ValueError as error:
        raise DataFormatError(str(error)) from None
    if dtype not in ("auto", "float32") and model_cfg.lm.train == "full":
        model.lm.to(DTYPES[dtype])
    return model, tokenizer


def tokenizer_additions(tokenizer) -> dict[str, Any]:
    """The tokens the project adds to or sets on the LM's tokenizer, with their ids (load_tokenizer)."""
    return {"qa_separator": {"token": QA_SEPARATOR, "id": tokenizer.convert_tokens_to_ids(QA_SEPARATOR)},
            "pad_token": {"token": tokenizer.pad_token, "id": tokenizer.pad_token_id}, "size": len(tokenizer)}


def check_tokenizer_additions(folder: Path, tokenizer) -> None:
    """The tokenizer found here gives the exported folder's added tokens the ids it was trained with."""
    path = folder / EXPORT_MANIFEST
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text()).get("tokenizer_additions")
    except (json.JSONDecodeError, AttributeError) as error:
        raise DataFormatError(f"{path}: not the JSON object main.py export writes ({error})") from None
    found = tokenizer_additions(tokenizer)
    if recorded and recorded != found:
        raise DataFormatError(f"{path}: the tokenizer loaded here differs from the one this model was trained "
                              f"with: recorded {recorded}, found {found} (another version of the LM's tokenizer?)")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here")
    return torch.device(name)


def load_model(checkpoint: str, config_files: list[str] | None = None, device: str = "auto", dtype: str = "auto",
               reference_inputs: bool = True) -> LoadedModel:
    """Check the paths, read the run config, build the model and load its weights (eval mode, on `device`, the
    frozen weights in `dtype`). reference_inputs: a `.pth` read with the reference's inputs (run_config_of)."""
    config_files = list(config_files or [])
    source = find_source(checkpoint, config_files)
    cfg = run_config_of(source, config_files, reference_inputs)
    target = pick_device(device)
    model, tokenizer = build_from_source(source, cfg, dtype)
    if source.kind == "export":
        check_tokenizer_additions(source.weights, tokenizer)
    model.to(target).eval()
    return LoadedModel(model, tokenizer, cfg, source, target)


def describe(loaded: LoadedModel) -> str:
    """Two lines for the REPL's header: where the weights came from, and what the model is."""
    model, cfg, source = loaded.model, loaded.cfg, loaded.source
    origin = {"run": f"run folder, weights {source.weights}", "folder": f"checkpoint folder {source.weights}",
              "export": f"exported folder {source.weights}",
              "reference": f"reference checkpoint {source.weights}"}[source.kind]
    bridge = model.describe_bridge()
    reads = ", ".join(model.modalities) or "no media"
    trained = f"task reader {cfg.task.reader}" if source.run_config or source.kind == "reference" else "no run config"
    return (f"{origin}\nLM {model.config.lm.name}, reads {reads}, {bridge}; {trained} "
            f"({'chat' if loaded.chat_trained else 'reference'} layout)")


def add_model_arguments(parser) -> None:
    """--checkpoint, --config, --device, --dtype, --our_defaults: which model to load, and how (chat, predict,
    serve)."""
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run, checkpoint or exported folder, or a reference .pth (docs/chat.md)")
    add_reference_arguments(parser)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="precision of the frozen LM and encoders (default auto: as trained)")


def add_reference_arguments(parser) -> None:
    """--config, --our_defaults: how a reference .pth is read (every command that takes one)."""
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="for a reference .pth: the run config(s) that build its model (repeatable)")
    parser.add_argument("--our_defaults", action="store_true",
                        help="for a reference .pth: our input defaults, not configs/compat/reference_eval*")


def check_our_defaults(checkpoint: str, our_defaults: bool) -> None:
    if our_defaults and Path(checkpoint).suffix not in REFERENCE_SUFFIXES:
        raise ConfigError("--our_defaults is for a reference .pth; a folder carries the inputs it was trained on")


def load_from_args(args) -> LoadedModel:
    """The model add_model_arguments' flags name."""
    check_our_defaults(args.checkpoint, args.our_defaults)
    return load_model(args.checkpoint, args.config, args.device, args.dtype, reference_inputs=not args.our_defaults)
