"""One call builds an eP-ALM model (or its blind baseline) from a ModelConfig."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from models.connector import CONNECTORS
from models.encoders import build_encoder
from models.epalm import EPALM
from models.injection import plan_injection
from models.language_model import build_language_model, load_tokenizer
from models.soft_prompt import SoftPrompt
from models.user_errors import ConfigError, check_choice

PROMPT_INITS = ("random", "vocab")


def _prompt_init(cfg: ModelConfig, embeddings: torch.Tensor) -> torch.Tensor | None:
    check_choice("model.prompt_init", cfg.prompt_init, PROMPT_INITS)
    if cfg.prompt_init == "random":
        return None
    rows = torch.randint(0, embeddings.shape[0], (cfg.prompt_len,))
    return embeddings[rows].detach().float().clone()


def build_model(cfg: ModelConfig, tokenizer=None, load_tokenizer_if_missing: bool = True) -> tuple[EPALM, object]:
    """Returns the model and the LM's tokenizer (loaded from `cfg.lm` unless given, None if it has none)."""
    if tokenizer is None and load_tokenizer_if_missing:
        tokenizer = load_tokenizer(cfg.lm.tokenizer or cfg.lm.name)
    lm = build_language_model(cfg.lm, tokenizer)
    encoder = connector = plan = None
    if cfg.visual:
        encoder = build_encoder(cfg.encoder)
        if not 1 <= cfg.injected_hidden_states <= encoder.num_layers:
            raise ConfigError(
                f"injected_hidden_states={cfg.injected_hidden_states} but encoder '{cfg.encoder.name}' has "
                f"{encoder.num_layers} blocks"
            )
        plan = plan_injection(
            cfg.start_layer_idx, cfg.end_layer_idx, cfg.injected_hidden_states, lm.num_layers,
            cfg.text_step, cfg.select_higher_step,
        )
        connector = CONNECTORS.build(
            cfg.connector, encoder.hidden_size, lm.hidden_size, cfg.injected_hidden_states, cfg.shared_connector
        )
    prompt = None
    if cfg.prompt_tuning and cfg.prompt_len > 0:
        init = _prompt_init(cfg, lm.model.get_input_embeddings().weight)
        prompt = SoftPrompt(cfg.prompt_len, lm.embedding_size, cfg.mlp, init)
    config = lm.model.config
    eos = tokenizer.eos_token_id if tokenizer is not None else config.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer is not None else config.pad_token_id
    model = EPALM(cfg, lm, encoder, connector, prompt, plan, pad_token_id=pad if pad is not None else eos, eos_token_id=eos)
    return model, tokenizer
