"""Builds a run's model as main.py does and writes what the build read (tests/test_engines.py launches it under
DeepSpeed ZeRO-3, where transformers builds the LM partitioned, and compares with a build without DeepSpeed).

    accelerate launch --config_file zero3.yaml -m tests.zero3_probe OUT.safetensors --config c.yaml [--set k=v ...]
"""
from __future__ import annotations

import json
import sys

import torch
from accelerate.utils import set_seed
from safetensors.torch import save_file

from epalm.models.factory import build_model
from epalm.models.param_count import count_parameters
from epalm.models.partitioned_params import is_partitioned
from epalm.training.accelerator_setup import make_accelerator, resolve_weight_dtypes
from epalm.training.run_config import resolve_config


def build(argv: list[str], with_accelerator: bool):
    """The model as training/run.py builds it: Accelerator (DeepSpeed's plugin, when launched so), seed, build."""
    cfg = resolve_config(argv)
    if with_accelerator:
        make_accelerator(cfg)
    else:
        resolve_weight_dtypes(cfg, "no")
    set_seed(cfg.seed)
    model, _ = build_model(cfg.model)
    return model


def facts(model) -> tuple[dict[str, torch.Tensor], dict]:
    embeddings = model.lm.model.get_input_embeddings().weight
    counts = {name: vars(count_parameters(child)) for name, child in model.named_children()}
    prompt = model.prompt_module.prefix_embedding[0].weight.detach().clone()
    partitioned = {"embeddings": is_partitioned(embeddings), "layers": is_partitioned(next(model.lm.layers.parameters()))}
    return {"prompt": prompt}, {"partitioned": partitioned, "counts": counts}


def main(out: str, *argv: str) -> None:
    tensors, meta = facts(build(list(argv), with_accelerator=True))
    save_file(tensors, out, metadata={"facts": json.dumps(meta)})


if __name__ == "__main__":
    main(*sys.argv[1:])
