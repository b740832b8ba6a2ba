"""AdamW with one group per trainable part, all on one warm-up + cosine schedule from transformers."""
from __future__ import annotations

import torch
from transformers import get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

from epalm.common.errors import ConfigError
from epalm.models.epalm import EPALM
from epalm.models.language_models.lm_training import is_lm_weight
from epalm.training.run_config import TrainConfig

# train.lm_lr's default for each way the LM trains (models/language_models/lm_training.py): LoRA's usual rate, and a small one
# for every weight of a pretrained LM.
DEFAULT_LM_LR = {"lora": 2e-4, "full": 1e-5}


def parameter_groups(model: EPALM, cfg: TrainConfig) -> list[dict]:
    """Connectors at `lr`, soft prompt at `prompt_lr`, anything else unfrozen (LayerNorms) at `lr`, and the LM's
    own trained weights (LoRA adapters, or all of them: model.lm.train) at `lm_lr`."""
    finetuning = model.lm.finetuning
    groups: dict[str, list[torch.nn.Parameter]] = {"connector": [], "prompt": [], "other": [], "lm": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if is_lm_weight(name, finetuning):
            part = "lm"
        elif name.startswith("connectors."):
            part = "connector"
        else:
            part = "prompt" if name.startswith("prompt_module.") else "other"
        groups[part].append(param)
    lm_lr = cfg.lm_lr if cfg.lm_lr is not None else DEFAULT_LM_LR.get(finetuning)
    lrs = {"connector": cfg.lr, "prompt": cfg.prompt_lr, "other": cfg.lr, "lm": lm_lr}
    return [
        {"params": params, "lr": lrs[part], "weight_decay": cfg.weight_decay, "name": part}
        for part, params in groups.items()
        if params
    ]


def use_fused_adamw(setting: str | bool, groups: list[dict]) -> bool:
    """`train.fused_adamw`: "auto" = fused when every trainable weight is on a GPU (one kernel launch for all
    of them instead of a few per tensor); on the CPU the default implementation keeps runs bit-reproducible
    with earlier ones (fused AdamW rounds differently)."""
    if setting == "auto":
        return all(p.device.type == "cuda" for group in groups for p in group["params"])
    return bool(setting)


def build_optimizer(model: EPALM, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if not groups:
        raise ConfigError("the model has no trainable parameter (model.visual and model.prompt_tuning both false?)")
    if use_fused_adamw(cfg.fused_adamw, groups):
        optimizer = torch.optim.AdamW(groups, fused=True)
        # Fused AdamW would take the fp16 gradient scaler's inf check inside its kernel and skip an overflowed
        # update silently: accelerate would then report the step as taken and the LR schedule would advance on
        # it. The scaler's usual path (unscale, check, step or skip) keeps skipped steps visible.
        optimizer._step_supports_amp_scaling = False
        return optimizer
    return torch.optim.AdamW(groups)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if cfg.min_lr_ratio > 0:
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, warmup, total_steps, min_lr_rate=cfg.min_lr_ratio
        )
    return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
