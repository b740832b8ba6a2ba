"""Everything needed to rebuild an eP-ALM model; dumped into every run folder and every checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from epalm.models.encoders.config import EncoderConfig
from epalm.models.language_models.frozen_lm import LanguageModelConfig
from epalm.common.errors import ConfigError

READOUTS = ("cls", "mean")


@dataclass
class ModelConfig:
    """Key names follow the reference's configs where it has one.

    visual: False builds the blind baseline: same LM and soft prompt, no encoder, no visual token.
    connector: a registered connector (models/connectors): "linear" (eP-ALM: injected into the LM's layers)
        or "prefix" (the input-prefix connector: N LM input embeddings); connector_options: its own keys
        (prefix: tokens, hidden).
    injected_hidden_states: K, how many encoder blocks (the last K) are read.
    readout: what is read of each of those blocks: "cls" (the CLS token, eP-ALM's) or "mean" (the mean of
        the patch tokens), each through the encoder's final norm.
    extra_encoders: further modalities of the same model, `{modality: encoder section}` (joint training,
        several media in one prompt); each gets its own connector of the same type.
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
    plugins: modules to import before building (`package.module`), defining modalities, encoders or
        connectors outside this repository's folders; kept in checkpoints so that they load again.
    """

    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    visual: bool = True
    connector: str = "linear"
    connector_options: dict[str, Any] = field(default_factory=dict)
    injected_hidden_states: int = 6
    readout: str = "cls"
    extra_encoders: dict[str, EncoderConfig] = field(default_factory=dict)
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
    plugins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ConfigError(f"model.readout must be one of {READOUTS}, got {self.readout!r}")
