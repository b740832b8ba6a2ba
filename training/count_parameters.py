"""How many parameters a model trains, for any size, without downloading weights: the model is built on PyTorch's
meta device from the architecture facts shipped in models/architectures/ (no weights, no memory) and the report a
training run prints at start is printed."""
from __future__ import annotations

import argparse
import sys

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.models.config import ModelConfig
from epalm.models.encoders.config import EncoderConfig
from epalm.models.language_models.frozen_lm import LanguageModelConfig
from epalm.models.language_models.lm_training import LM_TRAINING, LoraSettings
from epalm.models.param_count import ParameterCount, architecture_path, build_on_meta, count_parameters, parameter_report

EXAMPLES = """examples:
  # eP-ALM (OPT-2.7B + ViT-B/16, 6 Linears, MLP prompt) and eP-ALM_pt-L (OPT-6.7B + ViT-L/16)
  python -m epalm.training.count_parameters --lm opt-2.7b --encoder vit_base_patch16_224 --mlp
  python -m epalm.training.count_parameters --lm opt-6.7b --encoder vit_large_patch16_224 --shared_connector
  # the same with LoRA adapters on the LM (model.lm.train: lora), or every LM weight training (full)
  python -m epalm.training.count_parameters --lm opt-6.7b --encoder vit_large_patch16_224 --shared_connector --lm_train lora"""


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.training.count_parameters", __doc__, EXAMPLES)
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
    args = argument_parser().parse_args(argv)
    lora = LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, target_modules=args.lora_target_modules)
    cfg = ModelConfig(
        lm=LanguageModelConfig(name=architecture_path(args.lm), random_init=True, train=args.lm_train, lora=lora),
        encoders={"image": EncoderConfig(type="timm_vit", name=args.encoder)},
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
    sys.exit(run_command(main))
