"""Every LM family the registry names (models/language_models/families.py), and rotary families that need no entry,
carry the bridge: the layout is found, media reach the text, and cached generation equals recomputation.

A new family is one `register_family` line and a tiny config here (the first test fails until it has one)."""
from __future__ import annotations

import pytest
import torch

from epalm.common.errors import ConfigError
from epalm.models.language_models.families import LM_FAMILIES, locate_layout
from epalm.models.language_models.frozen_lm import LanguageModelConfig, load_lm_config
from tests.tiny_models import TINY_LMS, VOCAB, images, text_batch, tiny_model

SPECIAL = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2)
TINY_FAMILIES = {
    "opt": TINY_LMS["opt"],
    "gpt2": TINY_LMS["gpt2"],
    "gpt_neo": dict(hidden_size=32, num_layers=4, num_heads=4, attention_types=[[["global", "local"], 2]],
                    window_size=8, max_position_embeddings=64, **SPECIAL),
    "gptj": dict(n_embd=32, n_layer=4, n_head=4, rotary_dim=4, n_positions=64, **SPECIAL),
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, **SPECIAL),
    "llama": TINY_LMS["llama"],
}
# Families found by the generic search (one ModuleList of the layers, rotary positions): no registry entry.
UNREGISTERED = {
    "qwen2": TINY_LMS["qwen2"],
    "mistral": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=64, **SPECIAL),
}


def family_model(model_type: str, overrides: dict, **fields):
    lm = LanguageModelConfig(name=model_type, random_init=True, config_overrides=overrides)
    return tiny_model("opt", lm=lm, **fields)


def test_every_registered_family_has_a_tiny_config_here():
    assert set(LM_FAMILIES.names()) == set(TINY_FAMILIES)
    assert not set(UNREGISTERED) & set(LM_FAMILIES.names())


@pytest.mark.parametrize("model_type", [*TINY_FAMILIES, *UNREGISTERED])
def test_the_family_carries_the_bridge(model_type):
    overrides = {**TINY_FAMILIES, **UNREGISTERED}[model_type]
    model = family_model(model_type, overrides)
    config = load_lm_config(model_type, overrides)
    assert model.lm.num_layers == 4 and model.lm.model.config.model_type == model_type
    registered = LM_FAMILIES.get(model_type) if model_type in LM_FAMILIES else None
    if registered is not None and registered.position_table:
        assert isinstance(model.lm.position_table, torch.nn.Embedding)
    assert config.model_type == model_type
    ids, mask = text_batch(batch=2, length=5, left_pad=True)
    with torch.no_grad():
        seen = model(ids, mask, media=images(2)).logits
        other = model(ids, mask, media=images(2) + 1.0).logits
    assert not torch.allclose(seen, other)  # the media reach the text's logits
    kwargs = dict(media=images(2), max_new_tokens=5, min_new_tokens=5, num_beams=2)
    assert torch.equal(model.generate(ids, mask, use_cache=True, **kwargs),
                       model.generate(ids, mask, use_cache=False, **kwargs))


def test_a_family_the_search_cannot_place_is_an_error_naming_the_registry():
    model = family_model("llama", TINY_LMS["llama"]).lm.model
    model.config.model_type = "unknown_family"
    model.extra_stack = torch.nn.ModuleList(torch.nn.Identity() for _ in range(4))  # two candidate stacks
    with pytest.raises(ConfigError, match="families.py"):
        locate_layout(model)
