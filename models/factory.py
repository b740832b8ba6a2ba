"""One call builds a model (eP-ALM, an input-prefix model, or a blind baseline) from a ModelConfig."""
from __future__ import annotations

import torch

from epalm.common.errors import ConfigError, check_choice
from epalm.models.config import ModelConfig
from epalm.models.connectors import build_connector
from epalm.models.encoders import build_encoder
from epalm.models.encoders.base import PerceptionEncoder
from epalm.models.encoders.readouts import check_readout
from epalm.models.epalm import EPALM
from epalm.models.injection import plan_injection
from epalm.models.language_models.frozen_lm import build_language_model
from epalm.models.language_models.tokenizer import load_tokenizer
from epalm.models.modalities import load_plugins
from epalm.models.partitioned_params import full_shape, gathered
from epalm.models.soft_prompt import SoftPrompt

PROMPT_INITS = ("random", "vocab")


def _prompt_init(cfg: ModelConfig, embeddings: torch.Tensor) -> torch.Tensor | None:
    check_choice("model.prompt_init", cfg.prompt_init, PROMPT_INITS)
    if cfg.prompt_init == "random":
        return None
    rows = torch.randint(0, full_shape(embeddings)[0], (cfg.prompt_len,))
    with gathered([embeddings]):  # under ZeRO-3 the frozen table is partitioned: read it whole
        return embeddings[rows].detach().float().clone()


def _check_encoder(cfg: ModelConfig, encoder: PerceptionEncoder, modality: str) -> None:
    key = f"model.encoders.{modality}"
    if not 1 <= cfg.injected_hidden_states <= encoder.num_layers:
        raise ConfigError(f"model.injected_hidden_states={cfg.injected_hidden_states} but encoder {key} "
                          f"('{encoder.name}') has {encoder.num_layers} blocks")
    if encoder.modality != modality:
        raise ConfigError(f"{key}: type '{cfg.encoders[modality].type}' reads {encoder.modality}, not {modality}")
    check_readout(cfg.readout, cfg.patch_tokens, encoder.readouts, encoder.patch_grid(cfg.injected_hidden_states),
                  f"{key} (type '{cfg.encoders[modality].type}')")


def build_model(cfg: ModelConfig, tokenizer=None, load_tokenizer_if_missing: bool = True) -> tuple[EPALM, object]:
    """Returns the model and the LM's tokenizer (loaded from `cfg.lm` unless given, None if it has none)."""
    load_plugins(cfg.plugins)
    if tokenizer is None and load_tokenizer_if_missing:
        tokenizer = load_tokenizer(cfg.lm.tokenizer or cfg.lm.name)
    lm = build_language_model(cfg.lm, tokenizer)
    encoders, connectors, plan = {}, {}, None
    if cfg.visual:
        for modality, encoder_cfg in cfg.encoders.items():
            encoders[modality] = build_encoder(encoder_cfg)
            _check_encoder(cfg, encoders[modality], modality)
            connectors[modality] = build_connector(cfg, encoders[modality], lm)
        if next(iter(connectors.values())).placement.needs_plan:
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
    model = EPALM(cfg, lm, encoders, connectors, prompt, plan, pad_token_id=pad if pad is not None else eos,
                  eos_token_id=eos)
    return model, tokenizer
