"""A model is named by a hub id (`org/name`), a library's own name, or a local path: a local path must be there."""
from __future__ import annotations

from pathlib import Path

from transformers import CONFIG_MAPPING

from epalm.common.errors import MissingFileError, did_you_mean


def looks_local(name: str) -> bool:
    """A path rather than a hub id (`org/name`): absolute, relative with ./ or ../, deeper, or a file."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith(".json")


def check_model_source(key: str, name: str | None) -> None:
    """A model named by a local path must be there (transformers would call it a malformed hub id)."""
    if not name or name in CONFIG_MAPPING or not looks_local(name) or Path(name).expanduser().exists():
        return
    parent = Path(name).expanduser().parent
    siblings = [str(parent / p.name) for p in parent.iterdir()] if parent.is_dir() else []
    raise MissingFileError(f"{key} {name}: no such file or folder{did_you_mean(name.rstrip('/'), siblings)}")
