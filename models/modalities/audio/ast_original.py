"""YuanGongND/ast's original `.pth` (eP-ALM's `audioset_10_10_0.4593.pth`) as a transformers `ASTModel`: the key rules
(AST's fused qkv split into q, k, v) and the architecture read off the tensor shapes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import ASTConfig, ASTModel

from epalm.common.errors import DataFormatError
from epalm.models.encoders.original_checkpoints import (ORIGINAL_LAYER_NORM_EPS, KeyMappingReport, Rule,
                                                        load_mapped_weights, map_keys, num_blocks,
                                                        read_original_state_dict, rename, require_keys,
                                                        strip_prefixes, third)

_AST_RULES: list[Rule] = [
    (r"v\.cls_token", rename("embeddings.cls_token")),
    (r"v\.dist_token", rename("embeddings.distillation_token")),
    (r"v\.pos_embed", rename("embeddings.position_embeddings")),
    (r"v\.patch_embed\.proj\.(weight|bias)", rename(r"embeddings.patch_embeddings.projection.\1")),
    (r"v\.blocks\.(\d+)\.norm1\.(weight|bias)", rename(r"layers.\1.layernorm_before.\2")),
    (
        r"v\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
        [
            (r"layers.\1.attention.q_proj.\2", third(0)),
            (r"layers.\1.attention.k_proj.\2", third(1)),
            (r"layers.\1.attention.v_proj.\2", third(2)),
        ],
    ),
    (r"v\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", rename(r"layers.\1.attention.o_proj.\2")),
    (r"v\.blocks\.(\d+)\.norm2\.(weight|bias)", rename(r"layers.\1.layernorm_after.\2")),
    (r"v\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", rename(r"layers.\1.mlp.fc1.\2")),
    (r"v\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", rename(r"layers.\1.mlp.fc2.\2")),
    (r"v\.norm\.(weight|bias)", rename(r"layernorm.\1")),
]
# AST's AudioSet classifier: the DeiT heads it never uses, and its own LayerNorm + Linear head.
_AST_HEADS = [r"v\.head\.(weight|bias)", r"v\.head_dist\.(weight|bias)", r"mlp_head\.\d+\.(weight|bias)"]


def ast_config_from_state(state: dict[str, torch.Tensor], overrides: dict[str, Any], path: str) -> ASTConfig:
    """Architecture read off the tensor shapes; strides, length and mel bins come from `overrides`
    (default: AST's 10/10 strides), since they are not stored in the weights. The position table is checked."""
    require_keys(state, ["v.cls_token", "v.pos_embed", "v.patch_embed.proj.weight", "v.blocks.0.mlp.fc1.weight"], path)
    hidden = state["v.cls_token"].shape[-1]
    values: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=num_blocks(state, r"v\.blocks\.(\d+)\."),
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
    state = strip_prefixes(read_original_state_dict(path), ("module.",))
    config = ast_config_from_state(state, dict(overrides or {}), path)
    model = ASTModel(config)
    mapped, report = map_keys(state, _AST_RULES, _AST_HEADS, path)
    load_mapped_weights(model, mapped, report)
    return model.eval(), report
