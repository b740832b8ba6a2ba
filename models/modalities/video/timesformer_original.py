"""facebookresearch/TimeSformer's original `.pyth` (eP-ALM's `TimeSformer_divST_8x32_224_K600.pyth`) as a transformers
`TimesformerModel`: the key rules and the architecture read off the tensor shapes."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import TimesformerConfig, TimesformerModel

from epalm.models.encoders.original_checkpoints import (ORIGINAL_LAYER_NORM_EPS, KeyMappingReport, Rule,
                                                        load_mapped_weights, map_keys, num_blocks,
                                                        read_original_state_dict, rename, require_keys,
                                                        strip_prefixes)

_TIMESFORMER_RULES: list[Rule] = [
    (r"cls_token", rename("embeddings.cls_token")),
    (r"pos_embed", rename("embeddings.position_embeddings")),
    (r"time_embed", rename("embeddings.time_embeddings")),
    (r"patch_embed\.proj\.(weight|bias)", rename(r"embeddings.patch_embeddings.projection.\1")),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", rename(r"encoder.layer.\1.layernorm_before.\2")),
    # transformers keeps TimeSformer's fused qkv, so no split here
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", rename(r"encoder.layer.\1.attention.attention.qkv.\2")),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", rename(r"encoder.layer.\1.attention.output.dense.\2")),
    (r"blocks\.(\d+)\.temporal_norm1\.(weight|bias)", rename(r"encoder.layer.\1.temporal_layernorm.\2")),
    (
        r"blocks\.(\d+)\.temporal_attn\.qkv\.(weight|bias)",
        rename(r"encoder.layer.\1.temporal_attention.attention.qkv.\2"),
    ),
    (
        r"blocks\.(\d+)\.temporal_attn\.proj\.(weight|bias)",
        rename(r"encoder.layer.\1.temporal_attention.output.dense.\2"),
    ),
    (r"blocks\.(\d+)\.temporal_fc\.(weight|bias)", rename(r"encoder.layer.\1.temporal_dense.\2")),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", rename(r"encoder.layer.\1.layernorm_after.\2")),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", rename(r"encoder.layer.\1.intermediate.dense.\2")),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", rename(r"encoder.layer.\1.output.dense.\2")),
    (r"norm\.(weight|bias)", rename(r"layernorm.\1")),
]
_TIMESFORMER_HEADS = [r"head\.(weight|bias)"]


def timesformer_config_from_state(
    state: dict[str, torch.Tensor], overrides: dict[str, Any], path: str
) -> TimesformerConfig:
    """Architecture read off the tensor shapes (heads: d/64, the ViT convention), then `overrides`."""
    require_keys(state, ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"], path)
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
        num_hidden_layers=num_blocks(state, r"blocks\.(\d+)\."),
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
    state = strip_prefixes(read_original_state_dict(path), ("module.", "model."))
    config = timesformer_config_from_state(state, dict(overrides or {}), path)
    model = TimesformerModel(config)
    mapped, report = map_keys(state, _TIMESFORMER_RULES, _TIMESFORMER_HEADS, path)
    load_mapped_weights(model, mapped, report)
    return model.eval(), report
