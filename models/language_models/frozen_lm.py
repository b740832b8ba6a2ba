"""A frozen Hugging Face decoder-only causal LM, plus where its layer stack and position table live (its family's
layout: models/language_models/families.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from epalm.common.command_line import notice_once
from epalm.common.errors import ConfigError, loading
from epalm.models.language_models.families import locate_layout
from epalm.models.language_models.lm_training import LoraSettings, apply_lm_training, check_lm_training, describe, set_lora_dropout

@dataclass
class LanguageModelConfig:
    """Which frozen LM to load and how.

    name: a hub id (`facebook/opt-2.7b`), a local transformers folder, or (with `random_init`) a bare
        config JSON such as `models/architectures/opt-125m.json` or a model type (`opt`, `llama`).
    random_init: build from the config with random weights instead of loading them (tests, benchmarks).
    config_overrides: config fields to change (tiny test models, dropout, ...).
    tokenizer: where the tokenizer lives when not beside the weights.
    dtype: "auto", "float32", "float16" or "bfloat16": the dtype the frozen weights are held in ("auto":
        main.py picks float16 under fp16 mixed precision, bfloat16 under bf16, float32 otherwise).
    attn_implementation: "sdpa" or "eager" (the injection passes its own additive masks to every layer).
    compile: `torch.compile` the frozen LM (its forward with the injection hooks; training and generation):
        false, true (torch's default backend, inductor) or a backend name ("aot_eager" traces without
        generating code). A new text length can trigger a recompilation: the first steps are slow.
    train: "frozen" (eP-ALM), "lora" (peft adapters, settings in `lora`) or "full" (every weight, in float32):
        models/language_models/lm_training.py. A model key, not a training one: it shapes the model that a checkpoint rebuilds.
    """

    name: str = "facebook/opt-2.7b"
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    random_init: bool = False
    config_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    compile: bool | str = False
    train: str = "frozen"
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self) -> None:
        if self.compile is not False and (self.compile is not True and not isinstance(self.compile, str)):
            raise ConfigError(f"model.lm.compile must be false, true or a torch.compile backend name, "
                              f"got {self.compile!r}")
        check_lm_training(self.train, self.dtype)


def _get_path(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


DTYPES = {"auto": torch.float32, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class FrozenLanguageModel(nn.Module):
    """A causal LM whose weights do not train (unless `model.lm.train` says lora or full: models/language_models/lm_training.py),
    with the facts the injection needs about it."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        if model.config.is_encoder_decoder:
            raise ConfigError(f"{model.config.model_type} is an encoder-decoder model; eP-ALM needs a decoder-only LM")
        self.model = model
        self.layout = locate_layout(model)
        self.model.requires_grad_(False)
        self.model.eval()
        self.finetuning = "frozen"  # set by epalm.models.language_models.lm_training.apply_lm_training, with lora_config under lora
        self.lora_config = None

    # Looked up, not stored: a second registration of the same modules would duplicate their
    # parameters in every state dict (and in DeepSpeed's checkpoints).
    @property
    def layers(self) -> nn.ModuleList:
        return _get_path(self.model, self.layout.layers)

    @property
    def position_table(self) -> nn.Module | None:
        return _get_path(self.model, self.layout.position_table) if self.layout.position_table else None

    @property
    def project_in(self) -> nn.Module | None:
        """The input projection from embedding width to hidden width (OPT's `project_in`), if the LM has one."""
        for name, module in self.model.named_modules():
            if name.split(".")[-1] == "project_in":
                return module
        return None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        """Width of the residual stream, where visual tokens are injected (after OPT's project_in)."""
        return self.model.config.hidden_size

    @property
    def embedding_size(self) -> int:
        """Width of the input embeddings, where the soft prompt lives (OPT's word_embed_proj_dim)."""
        return self.model.get_input_embeddings().embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def training_note(self) -> str:
        """What of the LM trains, for the parameter report ("" when frozen)."""
        return describe(self)

    def train(self, mode: bool = True) -> "FrozenLanguageModel":
        # No dropout, ever (the reference leaves it on: spec defect 6), whether the LM trains or not; only
        # LoRA's own dropout, when asked for, follows the mode.
        super().train(False)
        if self.lora_config is not None:
            set_lora_dropout(self.model, mode)
        return self


def load_lm_config(name: str, overrides: dict[str, Any] | None = None):
    """A transformers config from a hub id, a local folder, or a bare `config.json`-style file."""
    if name in CONFIG_MAPPING:  # a bare model type ("opt", "llama"): the library's default config
        return AutoConfig.for_model(name, **(overrides or {}))
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        fields = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}  # _notes
        fields.update(overrides or {})
        return AutoConfig.for_model(**fields)
    with loading("LM config", name):
        return AutoConfig.from_pretrained(name, **(overrides or {}))


def attention_for(config, requested: str) -> str:
    """`requested`, except "sdpa" for a family whose transformers class has no SDPA attention (GPT-Neo): "eager",
    with a note (the injection passes its own additive masks, which both implementations take)."""
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if requested == "sdpa" and model_class is not None and not getattr(model_class, "_supports_sdpa", True):
        notice_once(f"model.lm.attn_implementation: {model_class.__name__} has no sdpa attention; using eager")
        return "eager"
    return requested


def build_language_model(cfg: LanguageModelConfig, tokenizer=None) -> FrozenLanguageModel:
    """Load (or, with `random_init`, build from the config) the frozen LM, sized for `tokenizer` if given."""
    dtype = DTYPES[cfg.dtype]
    if cfg.random_init:
        config = load_lm_config(cfg.name, cfg.config_overrides)
        config._attn_implementation = attention_for(config, cfg.attn_implementation)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        attention = attention_for(load_lm_config(cfg.name, cfg.config_overrides), cfg.attn_implementation)
        with loading("LM", cfg.name):
            model = AutoModelForCausalLM.from_pretrained(
                cfg.name, dtype=dtype, attn_implementation=attention, **cfg.config_overrides
            )
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # `</a>` is new to this vocabulary and has no spare row (OPT has spare rows, so the reference
        # never resizes). The new row is random and frozen, as every other LM weight.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    lm = FrozenLanguageModel(model)
    apply_lm_training(lm, cfg)  # LoRA's modules go in before any compilation
    if cfg.compile:
        # In place (nn.Module.compile): the state-dict keys stay the same, and the hooks the injection installs
        # later are traced with the forward, as they run inside the module's call.
        model.compile(backend="inductor" if cfg.compile is True else cfg.compile)
    return lm
