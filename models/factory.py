"""One call builds a model (eP-ALM, an input-prefix model, or a blind baseline) from a ModelConfig."""
from __future__ import annotations

import torch

from epalm.models.config import ModelConfig
from epalm.models.connectors import build_connector
from epalm.models.encoders import build_encoder
from epalm.models.encoders.base import PerceptionEncoder
from epalm.models.epalm import EPALM
from epalm.models.injection import plan_injection
from epalm.models.language_models.frozen_lm import build_language_model, load_tokenizer
from epalm.models.modalities import load_plugins
from epalm.models.partitioned_params import full_shape, gathered
from epalm.models.soft_prompt import SoftPrompt
from epalm.common.errors import ConfigError, check_choice

PROMPT_INITS = ("random", "vocab")


def _prompt_init(cfg: ModelConfig, embeddings: torch.Tensor) -> torch.Tensor | None:
    check_choice("model.prompt_init", cfg.prompt_init, PROMPT_INITS)
    if cfg.prompt_init == "random":
        return None
    rows = torch.randint(0, full_shape(embeddings)[0], (cfg.prompt_len,))
    with gathered([embeddings]):  # under ZeRO-3 the frozen table is partitioned: read it whole
        return embeddings[rows].detach().float().clone()


def _check_encoder(cfg: ModelConfig, encoder: PerceptionEncoder, name: str, modality: str | None = None) -> None:
    if not 1 <= cfg.injected_hidden_states <= encoder.num_layers:
        raise ConfigError(f"model.injected_hidden_states={cfg.injected_hidden_states} but encoder {name} "
                          f"('{encoder.name}') has {encoder.num_layers} blocks")
    if modality is not None and encoder.modality != modality:
        raise ConfigError(f"{name} is listed under modality '{modality}' but its type reads '{encoder.modality}'")


def build_model(cfg: ModelConfig, tokenizer=None, load_tokenizer_if_missing: bool = True) -> tuple[EPALM, object]:
    """Returns the model and the LM's tokenizer (loaded from `cfg.lm` unless given, None if it has none)."""
    load_plugins(cfg.plugins)
    if tokenizer is None and load_tokenizer_if_missing:
        tokenizer = load_tokenizer(cfg.lm.tokenizer or cfg.lm.name)
    lm = build_language_model(cfg.lm, tokenizer)
    encoder = connector = plan = None
    extra_encoders, extra_connectors = {}, {}
    if cfg.visual:
        encoder = build_encoder(cfg.encoder)
        _check_encoder(cfg, encoder, "model.encoder")
        connector = build_connector(cfg, encoder.hidden_size, lm)
        for modality, encoder_cfg in cfg.extra_encoders.items():
            if modality == encoder.modality:
                raise ConfigError(f"model.extra_encoders.{modality}: model.encoder already reads {modality}")
            extra_encoders[modality] = build_encoder(encoder_cfg)
            _check_encoder(cfg, extra_encoders[modality], f"model.extra_encoders.{modality}", modality)
            extra_connectors[modality] = build_connector(cfg, extra_encoders[modality].hidden_size, lm)
        if connector.placement == "layers":
            plan = plan_injection(
                cfg.start_layer_idx, cfg.end_layer_idx, cfg.injected_hidden_states, lm.num_layers,
                cfg.text_step, cfg.select_higher_step,
            )
    prompt = None
    if cfg.prompt_tuning and cfg.prompt_len > 0:
        init = _prompt_init(cfg, lm.model.get_input_embeddings().weight)
        prompt = SoftPrompt(cfg.prompt_len, lm.embedding_size, cfg.mlp, init)
    config = lm.model.config
    eos = tokenizer.eos_token_id if tokenizer is not None else config.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer is not None else config.pad_token_id
    model = EPALM(cfg, lm, encoder, connector, prompt, plan, pad_token_id=pad if pad is not None else eos,
                  eos_token_id=eos, extra_encoders=extra_encoders, extra_connectors=extra_connectors)
    return model, tokenizer
