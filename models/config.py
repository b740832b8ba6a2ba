"""Everything needed to rebuild an eP-ALM model; dumped into every run folder and every checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from epalm.common.command_line import notice_once
from epalm.common.config_io import merge
from epalm.common.errors import ConfigError
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.readouts import READOUTS
from epalm.models.language_models.frozen_lm import LanguageModelConfig


def _default_encoders() -> dict[str, EncoderConfig]:
    return {"image": EncoderConfig()}


@dataclass
class ModelConfig:
    """Key names follow the reference's configs where it has one.

    visual: False builds the blind baseline: same LM and soft prompt, no encoder, no visual token.
    encoders: `{modality: encoder section}`, one frozen encoder per modality the model reads, each with its own
        connector of the same type (joint training, several media in one prompt); the first is the main modality
        (what a medium without a modality tag is). The section's `type` must be an encoder of that modality.
    connector: a registered connector (models/connectors): "linear" (eP-ALM: injected into the LM's layers),
        "prefix" (the input-prefix connector: N LM input embeddings) or "mlp" (LLaVA's projector: an MLP per
        feature vector or patch token, each an LM input embedding); connector_options: its own keys
        (prefix: tokens, hidden; mlp: layers, tokens).
    injected_hidden_states: K, how many encoder blocks (the last K) are read; with readout "patches" the
        block read is the K-th from the end.
    readout: "cls" (the CLS token of each of the K blocks, eP-ALM's), "mean" (the mean of its patch tokens),
        each through the encoder's final norm, or "patches" (the patch tokens of block -K, for connectors over
        a sequence): models/encoders/readouts.py. An encoder without a CLS token has no "cls".
    patch_tokens: with readout "patches", pool the patch tokens to this many (a square grid for images); none:
        all of them.
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
    unfreeze_text_layer_norm / unfreeze_vision_layer_norm: also train the LayerNorms of the LM / encoders.
    plugins: modules to import before building (`package.module`), defining modalities, encoders or
        connectors outside this repository's folders; kept in checkpoints so that they load again.
    """

    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    encoders: dict[str, EncoderConfig] = field(default_factory=_default_encoders)
    visual: bool = True
    connector: str = "linear"
    connector_options: dict[str, Any] = field(default_factory=dict)
    injected_hidden_states: int = 6
    readout: str = "cls"
    patch_tokens: int | None = None
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
        if self.patch_tokens is not None and (self.readout != "patches" or self.patch_tokens < 1):
            raise ConfigError(f"model.patch_tokens={self.patch_tokens} pools patch tokens: it needs model.readout: "
                              "patches and a positive count")
        if self.visual and not self.encoders:
            raise ConfigError("model.encoders is empty: a model that reads media needs one encoder per modality "
                              "(or model.visual: false for the blind baseline)")

    @property
    def main_modality(self) -> str | None:
        return next(iter(self.encoders), None)


LEGACY_KEYS = ("encoder", "extra_encoders")


def translate_legacy_encoders(section: dict[str, Any], source: str) -> dict[str, Any]:
    """A model section written before `model.encoders` (`model.encoder` + `model.extra_encoders`, up to 2026-12) as
    today's: the old main encoder under its type's modality, first; each extra one under its key, after today's
    entries. An old key over a new section (a YAML of ours, a user's `--set model.encoder.name=...`) merges into the
    entry of its modality. Says so once per source. Returns a new dict; `section` is not changed."""
    if not isinstance(section, dict) or not any(key in section for key in LEGACY_KEYS):
        return section
    out = {k: v for k, v in section.items() if k not in LEGACY_KEYS}
    encoders = dict(out.get("encoders") or {})
    main = section.get("encoder") or {}
    extra = section.get("extra_encoders") or {}
    if not isinstance(main, dict) or not isinstance(extra, dict):
        raise ConfigError(f"{source}: model.encoder and model.extra_encoders must be mappings")
    ordered: dict[str, Any] = {}
    if main:  # the old main encoder stays the main one: first
        modality = _modality_of(main.get("type"), encoders, list(section.get("plugins") or []))
        ordered[modality] = merge(encoders.pop(modality, {}), main)
    for modality, entry in encoders.items():  # today's entries keep their order, an old extra key merged in
        ordered[modality] = merge(entry, extra[modality]) if modality in extra else entry
    for modality, entry in extra.items():
        ordered.setdefault(modality, entry)
    out["encoders"] = ordered
    notice_once(f"{source}: model.encoder / model.extra_encoders are read as model.encoders."
                f"{{{', '.join(out['encoders'])}}} (the keys before 2026-12; write model.encoders: {{modality: ...}})")
    return out


def _modality_of(encoder_type: str | None, encoders: dict[str, Any], plugins: list[str]) -> str:
    """The modality an old `model.encoder` section fills: its type's, else the one encoder already there, else
    the default type's (timm_vit: image)."""
    from epalm.models.encoders.base import ENCODERS
    from epalm.models.modalities import load_plugins

    if encoder_type:
        load_plugins(plugins)  # an encoder type a plugin defines
        return ENCODERS.get(encoder_type).modality
    if len(encoders) == 1:
        return next(iter(encoders))
    return ENCODERS.get(EncoderConfig().type).modality
