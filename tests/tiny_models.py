"""Tiny randomly initialised encoders and LMs, built from configs (no download), shared by the tests."""
from __future__ import annotations

import torch

from epalm.models.config import ModelConfig
from epalm.models.encoders.config import EncoderConfig
from epalm.models.factory import build_model
from epalm.models.language_models.frozen_lm import LanguageModelConfig

VOCAB = 97

TINY_LMS = {
    # word_embed_proj_dim != hidden_size exercises project_in / project_out, as OPT-350m has.
    "opt": dict(
        hidden_size=32, ffn_dim=64, num_hidden_layers=4, num_attention_heads=4, word_embed_proj_dim=24,
        vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=1, bos_token_id=2, eos_token_id=2,
        dropout=0.1, attention_dropout=0.1,
    ),
    "opt-post-ln": dict(
        hidden_size=32, ffn_dim=64, num_hidden_layers=4, num_attention_heads=4, word_embed_proj_dim=32,
        vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=1, bos_token_id=2, eos_token_id=2,
        do_layer_norm_before=False,
    ),
    "llama": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ),
    "gpt2": dict(n_embd=32, n_layer=4, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=2, eos_token_id=2),
    "qwen2": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
    ),
}

TINY_VIT = EncoderConfig(
    type="timm_vit",
    name="vit_tiny_patch16_224",
    pretrained=False,
    model_kwargs=dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3),
)


def tiny_lm_config(kind: str, attn: str = "sdpa") -> LanguageModelConfig:
    model_type = kind.split("-")[0]
    return LanguageModelConfig(name=model_type, random_init=True, config_overrides=TINY_LMS[kind], attn_implementation=attn)


def tiny_model(kind: str = "opt", seed: int = 0, **overrides):
    """An EPALM on a tiny LM and a tiny ViT; `overrides` are ModelConfig fields."""
    torch.manual_seed(seed)
    fields = dict(
        lm=tiny_lm_config(kind), encoders={"image": TINY_VIT}, injected_hidden_states=2, start_layer_idx=1,
        end_layer_idx=4, prompt_len=3,
    )
    fields.update(overrides)
    model, _ = build_model(ModelConfig(**fields), load_tokenizer_if_missing=False)
    return model


def text_batch(batch: int = 3, length: int = 7, seed: int = 1, left_pad: bool = False):
    """Random token ids with a BOS first and some padding (right padding unless left_pad)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        pad = min(row, length - 2)
        if left_pad:
            mask[row, :pad] = 0
            ids[row, :pad] = 1
            ids[row, pad] = 2
        else:
            mask[row, length - pad :] = 0
            ids[row, length - pad :] = 1
    if not left_pad:
        ids[:, 0] = 2
    return ids, mask


def images(batch: int = 3, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
