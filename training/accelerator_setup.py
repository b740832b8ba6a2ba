"""The Accelerator for a run: precision by device, real CPU data parallelism, seedable shuffling."""
from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, parse_flag_from_env

from epalm.common.errors import ConfigError, LaunchError, did_you_mean
from epalm.training.run_config import RunConfig
from epalm.training.trackers import tracker_arguments

PRECISIONS = ("auto", "no", "fp16", "bf16")
LM_DTYPE = {"fp16": "float16", "bf16": "bfloat16", "no": "float32"}


def resolve_precision(requested: str, on_gpu: bool) -> str:
    if requested not in PRECISIONS:
        raise ConfigError(f"mixed_precision '{requested}' is not one of {PRECISIONS}"
                          f"{did_you_mean(requested, PRECISIONS)}")
    if requested == "auto":
        return "fp16" if on_gpu else "no"
    if requested == "fp16" and not on_gpu:
        # accelerate would silently stay in fp32 on the CPU; say so instead.
        raise LaunchError("mixed_precision fp16 needs a GPU; on the CPU use bf16 or no")
    return requested


def make_accelerator(cfg: RunConfig) -> Accelerator:
    on_gpu = torch.cuda.is_available()
    precision = resolve_precision(cfg.mixed_precision, on_gpu)
    deepspeed = parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")
    accelerator = Accelerator(
        mixed_precision=precision,
        # On a CUDA build of torch with no GPU, accelerate would otherwise start N unrelated processes.
        # DeepSpeed brings its own CPU accelerator (one process on a CPU machine).
        cpu=not on_gpu and not deepspeed,
        gradient_accumulation_steps=cfg.train.grad_accum_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        **tracker_arguments(cfg),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise LaunchError(
            f"{launched} processes were launched but accelerate formed a group of {accelerator.num_processes}; "
            "on a CPU machine launch with `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu "
            "--num_processes N ...` or `torchrun --nproc_per_node N main.py ...`"
        )
    if parse_flag_from_env("ACCELERATE_USE_FSDP") and accelerator.distributed_type != DistributedType.FSDP:
        # accelerate applies FSDP on GPUs only and otherwise runs without saying so.
        accelerator.print("warning: launched with an FSDP config, but FSDP needs GPUs: this run is plain data "
                          f"parallelism ({accelerator.distributed_type.value}), every process holds the whole model")
    resolve_weight_dtypes(cfg, precision)
    return accelerator


def place_on_device(accelerator: Accelerator, model) -> None:
    """The model on the process's device. Under FSDP the LM stays where it was built: FSDP moves it there unit by
    unit as it shards it, so an LM that does not fit one GPU never has to."""
    if accelerator.distributed_type != DistributedType.FSDP:
        model.to(accelerator.device)
        return
    for name, child in model.named_children():
        if name != "lm":
            child.to(accelerator.device)


def prepare_for_evaluation(accelerator: Accelerator, model, batch_size: int):
    """`--evaluate` trains nothing, so nothing else prepares the model; an engine that shards the model must.
    ZeRO-3: transformers built the LM partitioned, and only DeepSpeed's engine gathers it for each forward.
    FSDP: shard it, as in training (an LM that does not fit one GPU). Other engines: the model as built."""
    if accelerator.distributed_type == DistributedType.FSDP:
        from epalm.training.fsdp_units import initialise_root

        model = accelerator.prepare_model(model)
        initialise_root(model)
        return model
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    if plugin is None or not plugin.hf_ds_config.is_zero3():
        return model
    if plugin.is_auto("train_micro_batch_size_per_gpu"):  # DeepSpeed needs one, even to run no training step
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size
    return accelerator.prepare(model)


def resolve_weight_dtypes(cfg: RunConfig, precision: str) -> None:
    """`auto` dtypes of the frozen weights: the mixed-precision dtype; an encoder whose LayerNorms train stays fp32,
    a fully fine-tuned LM too (its float32 master weights: models/language_models/lm_training.py)."""
    if cfg.model.lm.dtype == "auto":
        cfg.model.lm.dtype = "float32" if cfg.model.lm.train == "full" else LM_DTYPE[precision]
    for encoder in cfg.model.encoders.values():
        if encoder.dtype == "auto":
            encoder.dtype = "float32" if cfg.model.unfreeze_vision_layer_norm else LM_DTYPE[precision]
