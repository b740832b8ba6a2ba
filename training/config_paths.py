"""Paths written in a config file are read relative to that file, as its `include:` is, so a config works from
any folder (`configs/demo/*.yaml` name the demo's weights `models/demo_weights/...`).

A relative path under one of INPUT_PATH_KEYS in a config file is looked for

1. beside the file (`<file's folder>/<path>`), then
2. from the root of the repository holding the file (the nearest folder above it with `setup.py`,
   `pyproject.toml` or `.git`);

the first that exists is used, as an absolute path (so the run's `config.yaml` works from anywhere). A path found
in neither place is left as written: read from the current folder, or, for a model name, a hub id or timm name.
Paths typed on the command line (`--data_dir`, `--set`) are the user's, read from the current folder.

Outputs (`output_dir`, `train.feature_cache_dir`) are never looked up this way: a relative one is written under
the current folder (a run never writes into the repository or the installed package because a config lives there).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# Inputs a config may name; `*` is any key of that mapping (a modality, a mixture task). The legacy encoder keys
# are resolved too: they are translated to model.encoders only after the files are merged.
INPUT_PATH_KEYS = (
    "model.lm.name", "model.lm.tokenizer",
    "model.encoders.*.name", "model.encoders.*.checkpoint",
    "model.encoder.name", "model.encoder.checkpoint", "model.extra_encoders.*.name", "model.extra_encoders.*.checkpoint",
    "task.data_dir", "task.media_root", "mixture.*.task.data_dir", "mixture.*.task.media_root",
    "checkpoint",
)
ROOT_MARKERS = ("setup.py", "pyproject.toml", ".git")


def repository_root(config_file: Path) -> Path | None:
    for folder in config_file.resolve().parents:
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return None


def locate(value: str, config_file: Path) -> str:
    """`value` as an absolute path where it exists beside the file or from its repository's root; else as written."""
    if not value or Path(value).expanduser().is_absolute() or value.startswith("~"):
        return value
    root = repository_root(config_file)
    for base in (config_file.resolve().parent, root):
        if base is not None and (base / value).exists():
            return str((base / value).resolve())
    return value


def _visit(node: Any, keys: list[str], config_file: Path) -> None:
    if not isinstance(node, dict) or not keys:
        return
    head, rest = keys[0], keys[1:]
    names = list(node) if head == "*" else [head] if head in node else []
    for name in names:
        if rest:
            _visit(node[name], rest, config_file)
        elif isinstance(node[name], str):
            node[name] = locate(node[name], config_file)


def resolve_config_paths(values: dict[str, Any], config_file: Path,
                         keys: tuple[str, ...] = INPUT_PATH_KEYS) -> dict[str, Any]:
    """Resolve, in place, the input paths one config file names under `keys` (its includes resolve their own)."""
    for dotted in keys:
        _visit(values, dotted.split("."), config_file)
    return values
