"""`{dataset}-results.json`: what one run measured, its predictions and its configuration (written atomically)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from epalm.common.atomic_io import write_text_atomic


def results_path(folder: Path, dataset: str) -> Path:
    return folder / f"{dataset}-results.json"


def write_results(folder: Path, dataset: str, payload: dict[str, Any]) -> Path:
    path = results_path(folder, dataset)
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))
    return path


def read_results(folder: Path, dataset: str) -> dict[str, Any] | None:
    path = results_path(folder, dataset)
    return json.loads(path.read_text()) if path.is_file() else None
