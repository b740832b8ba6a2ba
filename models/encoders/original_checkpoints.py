"""Load the ORIGINAL TimeSformer (`.pyth`) and AST (`.pth`) weight files into transformers models.

eP-ALM uses `TimeSformer_divST_8x32_224_K600.pyth` (facebookresearch/TimeSformer) and
`audioset_10_10_0.4593.pth` (YuanGongND/ast). Their keys follow the timm ViT layout; each rule below
renames one key family to the installed transformers model's state dict, splitting AST's fused qkv.
Every source key left unused is reported (classifier heads at INFO, anything else as a warning) and
every model weight left unfilled is an error that names it.
"""
from __future__ import annotations

import logging
import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from transformers import ASTConfig, ASTModel, TimesformerConfig, TimesformerModel

from epalm.common.errors import DataFormatError

logger = logging.getLogger(__name__)

# A rule: source-key pattern (matched in full) -> list of (target key template, tensor transform).
Transform = Callable[[torch.Tensor], torch.Tensor]
Rule = tuple[str, list[tuple[str, Transform]]]


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _third(index: int) -> Transform:
    """Slice one of q, k, v out of a fused qkv weight `(3*d, d)` or bias `(3*d,)` (timm order: q, k, v)."""
    return lambda tensor: tensor.chunk(3, dim=0)[index]


def _rename(target: str) -> list[tuple[str, Transform]]:
    return [(target, _same)]


_TIMESFORMER_RULES: list[Rule] = [
    (r"cls_token", _rename("embeddings.cls_token")),
    (r"pos_embed", _rename("embeddings.position_embeddings")),
    (r"time_embed", _rename("embeddings.time_embeddings")),
    (r"patch_embed\.proj\.(weight|bias)", _rename(r"embeddings.patch_embeddings.projection.\1")),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", _rename(r"encoder.layer.\1.layernorm_before.\2")),
    # transformers keeps TimeSformer's fused qkv, so no split here
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", _rename(r"encoder.layer.\1.attention.attention.qkv.\2")),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", _rename(r"encoder.layer.\1.attention.output.dense.\2")),
    (r"blocks\.(\d+)\.temporal_norm1\.(weight|bias)", _rename(r"encoder.layer.\1.temporal_layernorm.\2")),
    (
        r"blocks\.(\d+)\.temporal_attn\.qkv\.(weight|bias)",
        _rename(r"encoder.layer.\1.temporal_attention.attention.qkv.\2"),
    ),
    (
        r"blocks\.(\d+)\.temporal_attn\.proj\.(weight|bias)",
        _rename(r"encoder.layer.\1.temporal_attention.output.dense.\2"),
    ),
    (r"blocks\.(\d+)\.temporal_fc\.(weight|bias)", _rename(r"encoder.layer.\1.temporal_dense.\2")),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", _rename(r"encoder.layer.\1.layernorm_after.\2")),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", _rename(r"encoder.layer.\1.intermediate.dense.\2")),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", _rename(r"encoder.layer.\1.output.dense.\2")),
    (r"norm\.(weight|bias)", _rename(r"layernorm.\1")),
]
_TIMESFORMER_HEADS = [r"head\.(weight|bias)"]

_AST_RULES: list[Rule] = [
    (r"v\.cls_token", _rename("embeddings.cls_token")),
    (r"v\.dist_token", _rename("embeddings.distillation_token")),
    (r"v\.pos_embed", _rename("embeddings.position_embeddings")),
    (r"v\.patch_embed\.proj\.(weight|bias)", _rename(r"embeddings.patch_embeddings.projection.\1")),
    (r"v\.blocks\.(\d+)\.norm1\.(weight|bias)", _rename(r"layers.\1.layernorm_before.\2")),
    (
        r"v\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
        [
            (r"layers.\1.attention.q_proj.\2", _third(0)),
            (r"layers.\1.attention.k_proj.\2", _third(1)),
            (r"layers.\1.attention.v_proj.\2", _third(2)),
        ],
    ),
    (r"v\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", _rename(r"layers.\1.attention.o_proj.\2")),
    (r"v\.blocks\.(\d+)\.norm2\.(weight|bias)", _rename(r"layers.\1.layernorm_after.\2")),
    (r"v\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", _rename(r"layers.\1.mlp.fc1.\2")),
    (r"v\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", _rename(r"layers.\1.mlp.fc2.\2")),
    (r"v\.norm\.(weight|bias)", _rename(r"layernorm.\1")),
]
# AST's AudioSet classifier: the DeiT heads it never uses, and its own LayerNorm + Linear head.
_AST_HEADS = [r"v\.head\.(weight|bias)", r"v\.head_dist\.(weight|bias)", r"mlp_head\.\d+\.(weight|bias)"]

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


def _strip_prefixes(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
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


def _num_blocks(state: dict[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    if not indices:
        raise DataFormatError("checkpoint has no transformer blocks")
    return max(indices) + 1


def _require(state: dict[str, torch.Tensor], keys: list[str], path: str) -> None:
    absent = [key for key in keys if key not in state]
    if absent:
        raise DataFormatError(f"{path}: not an original checkpoint of this encoder; missing {absent}")


def timesformer_config_from_state(
    state: dict[str, torch.Tensor], overrides: dict[str, Any], path: str
) -> TimesformerConfig:
    """Architecture read off the tensor shapes (heads: d/64, the ViT convention), then `overrides`."""
    _require(state, ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"], path)
    hidden = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    if "time_embed" not in state:
        attention_type = "space_only"
    elif "blocks.0.temporal_attn.qkv.weight" in state:
        attention_type = "divided_space_time"
    else:
        attention_type = "joint_space_time"
    values: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=_num_blocks(state, r"blocks\.(\d+)\."),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=patch,
        image_size=grid * patch,
        num_channels=state["patch_embed.proj.weight"].shape[1],
        num_frames=state["time_embed"].shape[1] if "time_embed" in state else 8,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        attention_type=attention_type,
        layer_norm_eps=ORIGINAL_LAYER_NORM_EPS,
    )
    values.update(overrides)
    return TimesformerConfig(**values)


def load_original_timesformer(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[TimesformerModel, KeyMappingReport]:
    """Build a `TimesformerModel` from facebookresearch/TimeSformer's `.pyth` (keys `model.blocks.0...`)."""
    path = str(path)
    state = _strip_prefixes(read_original_state_dict(path), ("module.", "model."))
    config = timesformer_config_from_state(state, dict(overrides or {}), path)
    model = TimesformerModel(config)
    mapped, report = map_keys(state, _TIMESFORMER_RULES, _TIMESFORMER_HEADS, path)
    load_mapped_weights(model, mapped, report)
    return model.eval(), report


def ast_config_from_state(state: dict[str, torch.Tensor], overrides: dict[str, Any], path: str) -> ASTConfig:
    """Architecture read off the tensor shapes; strides, length and mel bins come from `overrides`
    (default: AST's 10/10 strides), since they are not stored in the weights. The position table is checked."""
    _require(state, ["v.cls_token", "v.pos_embed", "v.patch_embed.proj.weight", "v.blocks.0.mlp.fc1.weight"], path)
    hidden = state["v.cls_token"].shape[-1]
    values: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=_num_blocks(state, r"v\.blocks\.(\d+)\."),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["v.blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=state["v.patch_embed.proj.weight"].shape[-1],
        qkv_bias="v.blocks.0.attn.qkv.bias" in state,
        layer_norm_eps=ORIGINAL_LAYER_NORM_EPS,
    )
    values.update(overrides)
    config = ASTConfig(**values)
    freq = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    time = (config.max_length - config.patch_size) // config.time_stride + 1
    positions = state["v.pos_embed"].shape[1]
    if positions != freq * time + 2:
        raise DataFormatError(
            f"{path}: pos_embed has {positions} positions but mel_bins={config.num_mel_bins}, "
            f"audio_frames={config.max_length}, frequency/time stride={config.frequency_stride}/{config.time_stride} "
            f"give {freq} x {time} + 2 = {freq * time + 2}; set the values the checkpoint was trained with"
        )
    return config


def load_original_ast(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[ASTModel, KeyMappingReport]:
    """Build an `ASTModel` from YuanGongND/ast's `.pth` (keys `module.v.blocks.0...`, fused qkv)."""
    path = str(path)
    state = _strip_prefixes(read_original_state_dict(path), ("module.",))
    config = ast_config_from_state(state, dict(overrides or {}), path)
    model = ASTModel(config)
    mapped, report = map_keys(state, _AST_RULES, _AST_HEADS, path)
    load_mapped_weights(model, mapped, report)
    return model.eval(), report
