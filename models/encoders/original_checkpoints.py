"""Mapping an encoder's ORIGINAL weight file (its authors' release, keys in the timm ViT layout) onto a transformers
model: rules that rename (or split) key families, a report of every key, checks.

The rules of each encoder live with it: models/modalities/video/timesformer_original.py (TimeSformer's `.pyth`),
models/modalities/audio/ast_original.py (AST's `.pth`). Every source key left unused is reported (classifier heads
at INFO, anything else as a warning) and every model weight left unfilled is an error that names it.
"""
from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from epalm.common.errors import DataFormatError

logger = logging.getLogger(__name__)

# A rule: source-key pattern (matched in full) -> list of (target key template, tensor transform).
Transform = Callable[[torch.Tensor], torch.Tensor]
Rule = tuple[str, list[tuple[str, Transform]]]


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def third(index: int) -> Transform:
    """Slice one of q, k, v out of a fused qkv weight `(3*d, d)` or bias `(3*d,)` (timm order: q, k, v)."""
    return lambda tensor: tensor.chunk(3, dim=0)[index]


def rename(target: str) -> list[tuple[str, Transform]]:
    return [(target, _same)]


# timm ViTs (both originals build on one) use LayerNorm eps 1e-6; transformers' ASTConfig defaults to 1e-12.
ORIGINAL_LAYER_NORM_EPS = 1e-6


@dataclass
class KeyMappingReport:
    """What happened to every key when an original checkpoint was mapped onto a transformers model."""

    path: str
    loaded: list[str] = field(default_factory=list)  # model keys filled from the file
    dropped_heads: list[str] = field(default_factory=list)  # classifier-head keys, unused on purpose
    unused: list[str] = field(default_factory=list)  # other file keys no rule maps: reported as a warning


def read_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of an original checkpoint, unwrapping `model_state` / `model` / `state_dict`."""
    try:
        # weights_only: a weight file must never run code; both original formats are plain dicts of tensors
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise DataFormatError(f"{path}: cannot be read as a torch checkpoint with weights_only=True "
                              f"({error})") from error
    state: Any = raw
    for wrapper in ("model_state", "model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise DataFormatError(f"{path}: expected a state dict of tensors (optionally under 'model_state'), "
                              f"got {type(raw)}")
    return dict(state)


def strip_prefixes(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop the DataParallel `module.` and the wrapper `model.` prefixes wherever the original saved them."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def map_keys(
    state: dict[str, torch.Tensor], rules: list[Rule], heads: list[str], path: str
) -> tuple[dict[str, torch.Tensor], KeyMappingReport]:
    """Apply the renaming rules; every source key ends up mapped, a known head, or reported as unused."""
    mapped: dict[str, torch.Tensor] = {}
    report = KeyMappingReport(path=path)
    for key, tensor in state.items():
        for pattern, targets in rules:
            match = re.fullmatch(pattern, key)
            if match:
                for template, transform in targets:
                    mapped[match.expand(template)] = transform(tensor)
                break
        else:
            if any(re.fullmatch(head, key) for head in heads):
                report.dropped_heads.append(key)
            else:
                report.unused.append(key)
    return mapped, report


def load_mapped_weights(model: nn.Module, mapped: dict[str, torch.Tensor], report: KeyMappingReport) -> None:
    """Load `mapped` into `model`; missing or mis-shaped weights are an error listing them all."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    extra = sorted(set(mapped) - set(expected))
    wrong_shape = [
        f"{key}: file {tuple(mapped[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(mapped) & set(expected))
        if mapped[key].shape != expected[key].shape
    ]
    if missing or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} model weight(s) not in the file: {missing}")
        if wrong_shape:
            problems.append(f"shape mismatches: {wrong_shape}")
        if extra:
            problems.append(f"mapped keys the model does not have: {extra}")
        raise DataFormatError(f"{report.path}: cannot load into {type(model).__name__}: " + "; ".join(problems))
    report.unused.extend(extra)
    if report.dropped_heads:
        logger.info("%s: classifier-head weights not used by the encoder: %s", report.path, report.dropped_heads)
    if report.unused:
        logger.warning(
            "%s: %d checkpoint key(s) not used (no rule, or no such model weight): %s",
            report.path, len(report.unused), report.unused,
        )
    model.load_state_dict({key: mapped[key] for key in expected}, strict=True)
    report.loaded = sorted(expected)


def num_blocks(state: dict[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    if not indices:
        raise DataFormatError("checkpoint has no transformer blocks")
    return max(indices) + 1


def require_keys(state: dict[str, torch.Tensor], keys: list[str], path: str) -> None:
    absent = [key for key in keys if key not in state]
    if absent:
        raise DataFormatError(f"{path}: not an original checkpoint of this encoder; missing {absent}")


