"""Parameter accounting: trainable / total, checkable for any size without downloading weights (a model built on
PyTorch's meta device from the architecture facts shipped in models/architectures/; the command is
`python -m epalm.training.count_parameters`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from epalm.common.errors import UnknownNameError, did_you_mean
from epalm.models.partitioned_params import full_numel

ARCHITECTURES = Path(__file__).parent / "architectures"


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)


def count_parameters(module: nn.Module) -> ParameterCount:
    """Whole tensors, also under DeepSpeed ZeRO-3 (which leaves a shard, often empty, in each parameter)."""
    params = list(module.parameters())
    return ParameterCount(sum(full_numel(p) for p in params if p.requires_grad), sum(full_numel(p) for p in params))


def parameter_report(model: nn.Module) -> str:
    """One line per top-level part, then the total; e.g. `trainable 4,239,360 / 6,961,... (0.0609%)`."""
    lines = []
    for name, child in model.named_children():
        count = count_parameters(child)
        if count.total:
            note = getattr(child, "training_note", "")  # the LM says how it trains when it does (LoRA, full)
            line = f"  {name:<14} {count.trainable:>15,} trainable / {count.total:>15,}"
            lines.append(f"{line}  {note}" if note else line)
    total = count_parameters(model)
    lines.append(f"  {'all':<14} {total.trainable:>15,} trainable / {total.total:>15,} ({total.percent:.4f}%)")
    return "parameters:\n" + "\n".join(lines)


def facts_by_hub_id(folder: Path = ARCHITECTURES) -> dict[str, Path]:
    """hub id -> its shipped facts file (the `_hub_id` of each `folder/*.json`)."""
    return {json.loads(path.read_text()).get("_hub_id"): path for path in sorted(folder.glob("*.json"))}


def architecture_path(name: str) -> str:
    """`opt-6.7b` -> the shipped config facts; anything else is passed through (hub id or folder), except a
    near miss of a shipped name (`opt-2.7`), which would otherwise be looked up on the hub."""
    path = ARCHITECTURES / f"{name}.json"
    if path.is_file():
        return str(path)
    shipped = sorted(p.stem for p in ARCHITECTURES.glob("*.json"))
    hint = did_you_mean(name, shipped)
    if hint and "/" not in name and not Path(name).exists():
        raise UnknownNameError(f"LM '{name}' is not a shipped architecture{hint}; shipped: {', '.join(shipped)}")
    return name


def build_on_meta(cfg) -> nn.Module:
    """The whole model with shapes but no storage: counts parameters of any size in milliseconds."""
    from epalm.models.factory import build_model

    with torch.device("meta"):
        model, _ = build_model(cfg, load_tokenizer_if_missing=False)
    return model
