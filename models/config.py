"""Everything needed to rebuild an eP-ALM model; dumped into every run folder and every checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field

from models.encoders.config import EncoderConfig
from models.language_model import LanguageModelConfig


@dataclass
class ModelConfig:
    """Key names follow the reference's configs where it has one.

    visual: False builds the blind baseline: same LM and soft prompt, no encoder, no visual token.
    injected_hidden_states: K, how many encoder blocks (the last K) give a CLS token.
    shared_connector: one Linear for all K tokens (eP-ALM_pt-L) instead of K.
    start_layer_idx, end_layer_idx: injection layers `[start, end)`; absolute (>= 0), from the end
        (negative, clamped at 0) or relative to depth (a fraction in (0, 1)). The default -13..-1 gives
        the reference's 19..31 on 32-layer and 11..23 on 24-layer OPTs.
    text_step, select_higher_step: inject only at layers that are multiples of text_step (the reference's
        options of the same names).
    injection_mode: "causal" (default; exact KV cache) or "epalm" (the reference's open mask, needed for
        released checkpoints to score as published).
    prompt_tuning, prompt_len, mlp: the soft prompt (`_pt` variants) and its MLP reparameterisation.
    prompt_init: "random" (normal, as nn.Embedding) or "vocab" (copies of random rows of the LM's input
        embeddings, which starts a tiny LM off where it can read the prompt).
    unfreeze_text_layer_norm / unfreeze_vision_layer_norm: also train the LayerNorms of the LM / encoder.
    """

    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    visual: bool = True
    connector: str = "linear"
    injected_hidden_states: int = 6
    shared_connector: bool = False
    start_layer_idx: int | float = -13
    end_layer_idx: int | float = -1
    text_step: int = 1
    select_higher_step: bool = False
    injection_mode: str = "causal"
    prompt_tuning: bool = True
    prompt_len: int = 10
    mlp: bool = False
    prompt_init: str = "random"
    unfreeze_text_layer_norm: bool = False
    unfreeze_vision_layer_norm: bool = False
