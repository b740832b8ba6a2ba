"""Parameter accounting: trainable / total, checkable for any size without downloading weights.

`python -m epalm.models.param_count` builds the model on PyTorch's meta device from the architecture facts shipped
in models/architectures/ (no weights, no memory) and prints the same report a training run prints at start.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from epalm.models.partitioned_params import full_numel
from epalm.common.errors import UnknownNameError, did_you_mean

ARCHITECTURES = Path(__file__).parent / "architectures"
EXAMPLES = """examples:
  # eP-ALM (OPT-2.7B + ViT-B/16, 6 Linears, MLP prompt) and eP-ALM_pt-L (OPT-6.7B + ViT-L/16)
  python -m epalm.models.param_count --lm opt-2.7b --encoder vit_base_patch16_224 --mlp
  python -m epalm.models.param_count --lm opt-6.7b --encoder vit_large_patch16_224 --shared_connector
  # the same with LoRA adapters on the LM (model.lm.train: lora), or every LM weight training (full)
  python -m epalm.models.param_count --lm opt-6.7b --encoder vit_large_patch16_224 --shared_connector --lm_train lora"""


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)


def count_parameters(module: nn.Module) -> ParameterCount:
    """Whole tensors, also under DeepSpeed ZeRO-3 (which leaves a shard, often empty, in each parameter)."""
    params = list(module.parameters())
    return ParameterCount(sum(full_numel(p) for p in params if p.requires_grad), sum(full_numel(p) for p in params))


def parameter_report(model: nn.Module) -> str:
    """One line per top-level part, then the total; e.g. `trainable 4,239,360 / 6,961,... (0.0609%)`."""
    lines = []
    for name, child in model.named_children():
        count = count_parameters(child)
        if count.total:
            note = getattr(child, "training_note", "")  # the LM says how it trains when it does (LoRA, full)
            line = f"  {name:<14} {count.trainable:>15,} trainable / {count.total:>15,}"
            lines.append(f"{line}  {note}" if note else line)
    total = count_parameters(model)
    lines.append(f"  {'all':<14} {total.trainable:>15,} trainable / {total.total:>15,} ({total.percent:.4f}%)")
    return "parameters:\n" + "\n".join(lines)


def architecture_path(name: str) -> str:
    """`opt-6.7b` -> the shipped config facts; anything else is passed through (hub id or folder), except a
    near miss of a shipped name (`opt-2.7`), which would otherwise be looked up on the hub."""
    path = ARCHITECTURES / f"{name}.json"
    if path.is_file():
        return str(path)
    shipped = sorted(p.stem for p in ARCHITECTURES.glob("*.json"))
    hint = did_you_mean(name, shipped)
    if hint and "/" not in name and not Path(name).exists():
        raise UnknownNameError(f"LM '{name}' is not a shipped architecture{hint}; shipped: {', '.join(shipped)}")
    return name


def build_on_meta(cfg) -> nn.Module:
    """The whole model with shapes but no storage: counts parameters of any size in milliseconds."""
    from epalm.models.factory import build_model

    with torch.device("meta"):
        model, _ = build_model(cfg, load_tokenizer_if_missing=False)
    return model


def argument_parser() -> argparse.ArgumentParser:
    from epalm.models.language_models.lm_training import LM_TRAINING, LoraSettings
    from epalm.common.command_line import add_debug_flag, command_parser  # training imports models, not the reverse

    parser = command_parser("python -m epalm.models.param_count", __doc__, EXAMPLES)
    parser.add_argument("--lm", default="opt-6.7b", metavar="NAME",
                        help="a models/architectures/ name (opt-125m ... llama-3-8b), hub id or folder")
    parser.add_argument("--encoder", default="vit_large_patch16_224", metavar="NAME", help="a timm ViT name")
    parser.add_argument("--injected_hidden_states", type=int, default=6, metavar="K",
                        help="K, the visual tokens (default 6)")
    parser.add_argument("--shared_connector", action="store_true", help="one Linear for the K tokens (pt-L)")
    parser.add_argument("--prompt_len", type=int, default=10, metavar="N",
                        help="soft prompt vectors (default 10; 0: none)")
    parser.add_argument("--mlp", action="store_true", help="the prompt's MLP reparameterisation")
    parser.add_argument("--lm_train", default="frozen", choices=LM_TRAINING,
                        help="model.lm.train: frozen (default), lora or full")
    parser.add_argument("--lora_r", type=int, default=LoraSettings.r, metavar="R",
                        help=f"LoRA's rank (default {LoraSettings.r}; alpha = 2 r)")
    parser.add_argument("--lora_target_modules", nargs="+", default=None, metavar="NAME",
                        help="LoRA's target modules (default: peft's for the LM family)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> ParameterCount:
    from epalm.models.config import ModelConfig
    from epalm.models.encoders.config import EncoderConfig
    from epalm.models.language_models.frozen_lm import LanguageModelConfig
    from epalm.models.language_models.lm_training import LoraSettings

    args = argument_parser().parse_args(argv)
    lora = LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, target_modules=args.lora_target_modules)
    cfg = ModelConfig(
        lm=LanguageModelConfig(name=architecture_path(args.lm), random_init=True, train=args.lm_train, lora=lora),
        encoder=EncoderConfig(type="timm_vit", name=args.encoder),
        injected_hidden_states=args.injected_hidden_states,
        shared_connector=args.shared_connector,
        prompt_len=args.prompt_len,
        prompt_tuning=args.prompt_len > 0,
        mlp=args.mlp,
    )
    model = build_on_meta(cfg)
    print(f"{args.lm} + {args.encoder}, K={args.injected_hidden_states}, shared={args.shared_connector}, "
          f"prompt_len={args.prompt_len}, mlp={args.mlp}, lm.train={args.lm_train}")
    print(parameter_report(model))
    return count_parameters(model)


if __name__ == "__main__":
    from epalm.common.command_line import run_command

    sys.exit(run_command(main))
