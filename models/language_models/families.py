"""Where each LM family keeps its decoder layers and learned position table: one registry entry per family.

A family whose layers the generic search finds (one ModuleList of `num_hidden_layers` blocks) and which has no
learned position table needs no entry: the rotary families (llama, mistral, qwen2, gemma, phi3 ...) work as they
are. A new family that does not is one `register_family(...)` line below and a case in tests/test_lm_families.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from epalm.common.errors import ConfigError
from epalm.common.registry import Registry


@dataclass(frozen=True)
class DecoderLayout:
    """Attribute paths inside a `*ForCausalLM` module.

    layers: the ModuleList of decoder blocks, in order.
    position_table: an additive learned position embedding to silence at prompt and visual positions
        (None for rotary models, whose prefix positions get position id 0: an identity rotation).
    pad_position_id: the position id padding gets (OPT's own rule gives -1, which its offset table
        accepts; plain tables need an index >= 0).
    """

    layers: str
    position_table: str | None = None
    pad_position_id: int = 0


LM_FAMILIES: Registry[DecoderLayout] = Registry("LM family (transformers model_type)")


def register_family(model_type: str, layout: DecoderLayout) -> None:
    LM_FAMILIES.add(model_type, layout)


register_family("opt", DecoderLayout("model.decoder.layers", "model.decoder.embed_positions", pad_position_id=-1))
register_family("gpt2", DecoderLayout("transformer.h", "transformer.wpe"))
register_family("gpt_neo", DecoderLayout("transformer.h", "transformer.wpe"))
register_family("gptj", DecoderLayout("transformer.h"))
register_family("gpt_neox", DecoderLayout("gpt_neox.layers"))
register_family("llama", DecoderLayout("model.layers"))


def locate_layout(model: PreTrainedModel) -> DecoderLayout:
    """The registered layout of the model's family, else the one ModuleList holding `num_hidden_layers` blocks."""
    model_type = model.config.model_type
    if model_type in LM_FAMILIES:
        return LM_FAMILIES.get(model_type)
    n_layers = model.config.num_hidden_layers
    candidates = [
        name for name, module in model.named_modules() if isinstance(module, nn.ModuleList) and len(module) == n_layers
    ]
    if len(candidates) != 1:
        raise ConfigError(
            f"cannot locate the decoder layer stack of model_type '{model_type}': ModuleLists of length "
            f"{n_layers} found at {candidates or 'none'}; register its layout in models/language_models/families.py"
        )
    return DecoderLayout(candidates[0])
