"""A stage's trained modules and report in `<out_dir>/<stage>/`: `weights.safetensors` (module name -> its state,
flattened as `name.key`) and `report.json`, both written atomically; reused when the stage's config is unchanged."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from epalm.common.atomic_io import atomic_path, write_text_atomic

WEIGHTS = "weights.safetensors"
REPORT = "report.json"


def fingerprint(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_stage(folder: Path, modules: dict[str, torch.nn.Module], report: dict[str, Any]) -> None:
    state = {f"{name}.{key}": tensor.detach().contiguous() for name, module in modules.items()
             for key, tensor in module.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_text_atomic(folder / REPORT, json.dumps(report, indent=2, default=str))  # last: marks the stage done


def load_stage(folder: Path, modules: dict[str, torch.nn.Module], expected_fingerprint: str) -> dict | None:
    """Load the modules' states and return the report, or None when the stage is absent or from another config."""
    if not (folder / REPORT).is_file() or not (folder / WEIGHTS).is_file():
        return None
    report = json.loads((folder / REPORT).read_text())
    if report.get("fingerprint") != expected_fingerprint:
        return None
    state = load_file(str(folder / WEIGHTS))
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return report
