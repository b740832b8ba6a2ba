"""How much GPU memory one process of a run needs, without weights or a GPU: the parameters are counted on PyTorch's
meta device (the LM from models/architectures/, the encoder from models/architectures/encoders/ or timm, the
connector and soft prompt as the run builds them), the rest is arithmetic:

- frozen weights in their dtype (`auto`: the mixed-precision dtype); a fully fine-tuned LM in float32;
- each trainable parameter: float32 weight + gradient + AdamW's two moments = 16 bytes;
- activations kept for the backward, per token and LM layer, in the activations' dtype: the norms' inputs (float32,
  as RMSNorm / LayerNorm upcast), q, k, v and the attention output (PyTorch's memory-efficient attention keeps no
  S x S matrix), the MLP's hidden (gate, up and activation of a gated MLP; two for a plain one); with the LM
  training, the inputs of the Linears whose weights train too (every one for full fine-tuning, LoRA's targets);
- the logits of the supervised positions in float32 and their log-softmax.
Tokens per sample: the soft prompt, the media positions (the connector's), the text (`train.max_text_len`). The
frozen encoder runs without gradients (its activations are not kept; with the feature cache it is not even loaded).
No gradient checkpointing (the trainer has none). `--shards N`: the weights and optimizer states divided over N
processes (DeepSpeed ZeRO-3); activations and logits stay per process. CUDA's own context and the allocator's
slack come on top (a few GB).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.common.config_io import from_dict
from epalm.common.errors import UnknownNameError
from epalm.models.connectors.base import connector_class
from epalm.models.language_models.frozen_lm import LanguageModelConfig, build_language_model
from epalm.models.param_count import ARCHITECTURES, count_parameters, facts_by_hub_id
from epalm.models.soft_prompt import SoftPrompt
from epalm.training.run_config import resolve_config

ENCODER_FACTS = ARCHITECTURES / "encoders"
GB = 1024 ** 3
EXAMPLES = """examples:
  python -m epalm.training.memory_estimate --config configs/recipes/llava15_stage2.yaml
  python -m epalm.training.memory_estimate --config configs/recipes/multi_token_stage2.yaml --set train.batch_size=4"""


@dataclass
class MemoryEstimate:
    lm_parameters: int
    encoder_parameters: int
    trainable_parameters: int
    tokens_per_sample: int
    frozen_weights_gb: float
    trainable_state_gb: float
    activations_gb: float
    logits_gb: float
    shards: int = 1

    @property
    def total_gb(self) -> float:
        states = (self.frozen_weights_gb + self.trainable_state_gb) / self.shards
        return states + self.activations_gb + self.logits_gb


def lm_facts(name: str) -> Path:
    """The shipped architecture facts of an LM named by its hub id (or a shipped name, or a facts file)."""
    if Path(name).suffix == ".json" and Path(name).is_file():
        return Path(name)
    found = facts_by_hub_id(ARCHITECTURES).get(name) or (ARCHITECTURES / f"{name}.json")
    if not found.is_file():
        raise UnknownNameError(f"model.lm.name {name}: no shipped architecture facts (models/architectures/*.json: "
                               f"{', '.join(sorted(filter(None, facts_by_hub_id(ARCHITECTURES))))})")
    return found


def encoder_tower(section) -> tuple[torch.nn.Module, tuple[int, ...] | None]:
    """The encoder's tower on the meta device and its patch grid, from shipped facts (a timm name: timm's own)."""
    import timm
    import transformers

    facts = facts_by_hub_id(ENCODER_FACTS).get(section.name)
    with torch.device("meta"):
        if facts is None and section.type in ("timm_vit", "timm_pooled"):
            model = timm.create_model(section.name, pretrained=False, num_classes=0)
            grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
            return model, tuple(grid) if grid else None
        if facts is None:
            raise UnknownNameError(f"encoder {section.name}: no shipped facts (models/architectures/encoders/*.json)")
        values = json.loads(facts.read_text())
        if "timm_name" in values:
            return timm.create_model(values["timm_name"], pretrained=False, num_classes=0), tuple(values["patch_layout"])
        model_class = getattr(transformers, values["model_class"])
        return model_class(model_class.config_class(**values["config"])), tuple(values["patch_layout"])


def activation_bytes_per_token(config, train: str, lora_targets: int, dtype_bytes: int) -> int:
    """Bytes kept for the backward per token and decoder layer (see the module's docstring)."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) * (hidden // heads)
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "ffn_dim", 4 * hidden)
    gated = hasattr(config, "intermediate_size")  # Llama, Mistral, Qwen2: SwiGLU
    kept = 2 * 4 * hidden  # the two norms' inputs, float32
    kept += dtype_bytes * (2 * hidden + 2 * kv)  # q, k, v, attention output
    kept += 4 * heads  # the attention's log-sum-exp
    kept += dtype_bytes * (3 if gated else 2) * intermediate
    if train == "full":  # every Linear's input: q/k/v share one, o, up/gate share one, down
        kept += dtype_bytes * (3 * hidden + intermediate)
    elif train == "lora":
        kept += dtype_bytes * hidden * lora_targets
    return kept


def estimate(cfg, shards: int = 1) -> MemoryEstimate:
    model = cfg.model
    train_lm = model.lm.train
    half = cfg.mixed_precision in ("bf16", "fp16", "auto")  # auto: fp16 on a GPU
    frozen_bytes = 2 if half else 4
    lm_cfg = LanguageModelConfig(name=str(lm_facts(model.lm.name)), random_init=True, train=train_lm, lora=model.lm.lora)
    with torch.device("meta"):
        lm = build_language_model(lm_cfg)
    lm_count = count_parameters(lm)
    trainable = lm_count.trainable
    encoder_parameters, media_positions = 0, 0
    if model.visual:
        modality, section = next(iter(model.encoders.items()))
        tower, grid = encoder_tower(section)
        encoder_parameters = sum(p.numel() for p in tower.parameters())
        width = getattr(getattr(tower, "config", None), "hidden_size", None) or getattr(tower, "embed_dim", None) or \
            getattr(tower, "num_features")
        features = (model.patch_tokens or math.prod(grid)) if model.readout == "patches" else \
            model.injected_hidden_states
        connector_type = connector_class(model.connector)
        options = from_dict(connector_type.Options, dict(model.connector_options), "model.connector_options")
        with torch.device("meta"):
            connector = connector_type.from_config(model, options, width, lm, features)
        trainable += sum(p.numel() for p in connector.parameters())
        media_positions = connector.tokens_per_instance
    prompt = model.prompt_len if model.prompt_tuning else 0
    if prompt:
        with torch.device("meta"):
            trainable += sum(p.numel() for p in SoftPrompt(prompt, lm.embedding_size, model.mlp).parameters())
    tokens = prompt + media_positions + cfg.train.max_text_len
    batch = cfg.train.batch_size
    lm_weights = lm_count.total - lm_count.trainable if train_lm == "lora" else lm_count.total
    frozen = (0 if train_lm == "full" else lm_weights * frozen_bytes) + encoder_parameters * frozen_bytes
    targets = len(model.lm.lora.target_modules or ["q_proj", "v_proj"])
    per_token = activation_bytes_per_token(lm.model.config, train_lm, targets, 4 if train_lm == "full" else frozen_bytes)
    activations = per_token * lm.num_layers * tokens * batch
    vocab = lm.model.get_input_embeddings().num_embeddings
    logits = 2 * 4 * vocab * batch * cfg.train.max_text_len  # float32 logits and log-softmax, text positions
    return MemoryEstimate(lm_count.total, encoder_parameters, trainable, tokens, frozen / GB, 16 * trainable / GB,
                          activations / GB, logits / GB, shards)


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m epalm.training.memory_estimate", __doc__.split("\n\n")[0], EXAMPLES)
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="the run's YAML config (a recipe); repeat to layer several")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key (repeatable)")
    parser.add_argument("--shards", type=int, default=1, metavar="N",
                        help="weights and optimizer states divided over N processes (ZeRO-3); default 1")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = argument_parser().parse_args(argv)
    run_argv = [item for path in args.config for item in ("--config", path)]
    run_argv += [item for text in args.set for item in ("--set", text)]
    result = estimate(resolve_config(run_argv), args.shards)
    report = {**asdict(result), "total_gb": result.total_gb}
    for key, value in report.items():
        print(f"{key:<22} {value:,.2f}" if isinstance(value, float) else f"{key:<22} {value:,}")
    return report


if __name__ == "__main__":
    sys.exit(run_command(main))
