"""Training the LM too, as ablations of eP-ALM's frozen LM: `model.lm.train` = frozen | lora | full.

- frozen (default, eP-ALM): no LM weight trains.
- lora: LoRA adapters from `peft` are injected into the LM's own modules, in place
  (`peft.inject_adapter_in_model`): the decoder layers, the input embeddings and the model object that the
  injection hooks (models/injection.py) are registered on stay the same objects, so the hooks still fire.
  Only the adapters train; they are held in float32 whatever `model.lm.dtype` holds the frozen weights in.
- full: every LM weight trains, held in float32 (the master weights; mixed precision then runs the LM
  under autocast as it runs the connectors). `model.lm.dtype` must be `auto` (resolved to float32) or
  `float32`.

The LM runs without dropout in every mode, as a frozen one does (its own `attention_dropout` / `dropout`
stay off: the ablation changes what trains, not the LM's regularisation); only LoRA's own dropout
(`model.lm.lora.dropout`, 0 by default) follows `model.train()`.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import nn

from epalm.common.errors import ConfigError

LM_TRAINING = ("frozen", "lora", "full")
ADAPTER_NAME = "default"  # peft's name for the one adapter
LM_PREFIX = "lm.model."  # where the LM's own weights sit in the EPALM state dict


@dataclass
class LoraSettings:
    """LoRA on the LM (`model.lm.train: lora`).

    r: the rank; alpha: the scale numerator (the update is `B A x * alpha / r`); dropout: on the adapters'
    input, while training only.
    target_modules: module names inside the LM (a name matches a module whose path ends with it, as in
    peft); none: peft's default for the LM's family (q_proj and v_proj for OPT, Llama, Qwen2; c_attn for GPT-2).
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"model.lm.lora.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"model.lm.lora.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.lm.lora.dropout must lie in [0, 1), got {self.dropout}")
        targets = self.target_modules
        if targets is not None and (not isinstance(targets, list) or not targets
                                    or not all(isinstance(t, str) and t for t in targets)):
            raise ConfigError(f"model.lm.lora.target_modules must be a non-empty list of module names, got {targets!r}")


def check_lm_training(train: str, dtype: str) -> None:
    """Config-time checks of `model.lm.train` against `model.lm.dtype`."""
    if train not in LM_TRAINING:
        raise ConfigError(f"model.lm.train={train!r} is not one of {', '.join(LM_TRAINING)}")
    if train == "full" and dtype not in ("auto", "float32"):
        raise ConfigError(f"model.lm.train=full keeps the LM's weights in float32 (the master weights; mixed "
                          f"precision runs them under autocast), but model.lm.dtype={dtype}: use auto or float32")


def apply_lm_training(lm: nn.Module, cfg) -> None:
    """Make what `cfg.train` says trainable in a frozen LM (at build time, before any hook is installed)."""
    lm.finetuning = cfg.train
    if cfg.train == "lora":
        lm.lora_config = _inject_lora(lm.model, cfg.lora, cfg.name)
    elif cfg.train == "full":
        if lm.dtype != torch.float32:
            raise ConfigError(f"model.lm.train=full needs the LM in float32, it was built in {lm.dtype}")
        lm.model.requires_grad_(True)


def default_target_modules(model: nn.Module) -> list[str]:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = model.config.model_type
    if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise ConfigError(f"peft has no default LoRA target modules for model_type '{model_type}': set "
                          f"model.lm.lora.target_modules (module names of the LM, e.g. {_module_names(model)[:8]})")
    return sorted(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])


def _module_names(model: nn.Module) -> list[str]:
    """The distinct last names of the LM's modules that hold weights (what target_modules can name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if name and not list(module.children()) and getattr(module, "weight", None) is not None})


def _inject_lora(model: nn.Module, settings: LoraSettings, base_name: str):
    from peft import LoraConfig, inject_adapter_in_model

    targets = settings.target_modules or default_target_modules(model)
    matched = {t: [m for p, m in model.named_modules() if p == t or p.endswith("." + t)] for t in targets}
    unmatched = [t for t, modules in matched.items() if not modules]
    if unmatched:
        raise ConfigError(f"model.lm.lora.target_modules: {unmatched} match no module of the LM "
                          f"({model.config.model_type}); its modules with weights are named {_module_names(model)}")
    # GPT-2's Conv1D stores its weight transposed (peft would warn and set this itself).
    transposed = any(type(m).__name__ == "Conv1D" for modules in matched.values() for m in modules)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, fan_in_fan_out=transposed, task_type="CAUSAL_LM",
                        base_model_name_or_path=base_name)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    for name, param in model.named_parameters():
        if is_lora_parameter(name):
            # Trainable weights in float32 (the frozen base may be fp16 / bf16); peft casts the input to match.
            param.data = param.data.float()
    return config


def is_lora_parameter(name: str) -> bool:
    return ".lora_" in name


def is_lm_weight(name: str, finetuning: str) -> bool:
    """An EPALM parameter that trains as part of the LM's own training (not the bridge, not an unfrozen LayerNorm
    of a frozen LM): the LoRA adapters under lora, every LM weight under full."""
    if not name.startswith(LM_PREFIX):
        return False
    return finetuning == "full" or (finetuning == "lora" and is_lora_parameter(name))


def set_lora_dropout(model: nn.Module, training: bool) -> None:
    """LoRA's own dropout follows the model's mode; everything else of the LM stays in eval mode."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.lora_dropout.train(training)


def describe(lm: nn.Module) -> str:
    """For the parameter report: how the LM trains."""
    if lm.finetuning == "lora":
        config = lm.lora_config
        adapted = sum(1 for name, _ in lm.model.named_modules() if name.endswith(f"lora_A.{ADAPTER_NAME}"))
        return (f"LoRA adapters r={config.r} alpha={config.lora_alpha} dropout={config.lora_dropout} on "
                f"{', '.join(sorted(config.target_modules))} ({adapted} modules)")
    if lm.finetuning == "full":
        return "every weight trains (float32)"
    return ""
