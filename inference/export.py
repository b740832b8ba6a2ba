"""A trained bridge as a folder to hand on: `python main.py export RUN --out DIR [--push_to_hub USER/NAME]`.

The folder holds what someone else needs and no more: the trained tensors (`model.safetensors`, and the LM's own
`lora/` or `lm/` when it trained too) with the resolved model config (`epalm_config.json`): a checkpoint folder,
so every command and `Bridge.load` read it; `run_config.yaml`, how prompts are read and answers generated (the
task reader and templates, the eval section, the seed); `training_config.yaml`, the run's whole config;
`bridge.json`, the LM's and encoders' names, the tokenizer's additions, steps and metrics; and `README.md`, a
model card. Loading it needs only the frozen base models, from the hub or local folders under those names.

The folder is written beside DIR under a temporary name and renamed when complete. `--push_to_hub` uploads it
with huggingface_hub's own calls (`HfApi.create_repo`, `HfApi.upload_folder`); the token is huggingface_hub's
(the HF_TOKEN variable or `hf auth login`), never a flag.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from epalm.common.atomic_io import write_text_atomic
from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.common.config_io import to_dict
from epalm.common.errors import ConfigError, LaunchError
from epalm.inference.checkpoint_source import (
    EXPORT_MANIFEST,
    EXPORTED_RUN_CONFIG,
    CheckpointSource,
    add_reference_arguments,
    build_from_source,
    check_our_defaults,
    find_source,
    read_run_config,
    run_config_of,
)
from epalm.inference.model_card import CARD, manifest, model_card
from epalm.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_config, save_checkpoint
from epalm.models.language_models.lm_checkpoint import FULL_DIR, LORA_DIR
from epalm.models.language_models.tokenizer import load_tokenizer
from epalm.training.run_config import RunConfig

TRAINING_CONFIG = "training_config.yaml"
# The task keys that say how a prompt is read and scored (the data's paths and splits stay in the training config).
READING_KEYS = ("reader", "prompt_template", "chat_template", "max_instances", "metric", "vqa_eval_version")
EXAMPLES = """examples:
  python main.py export outputs/demo/image_vqa/epalm --out exports/demo-image-vqa
  python main.py export outputs/run/best --out exports/my-bridge --overwrite
  python main.py export ePALM_pt_L_vqa.pth --config configs/image/epalm_pt_l_vqa.yaml --out exports/pt-l-vqa
  HF_TOKEN=hf_... python main.py export outputs/run --out exports/my-bridge --push_to_hub me/my-bridge --private"""


def reading_sections(cfg: RunConfig) -> dict[str, Any]:
    """What loading the folder needs of the run config: the seed, how prompts are read, the eval section."""
    def task(section) -> dict[str, Any]:
        return {key: getattr(section, key) for key in READING_KEYS}

    values: dict[str, Any] = {"seed": cfg.seed, "task": task(cfg.task), "eval": to_dict(cfg.eval)}
    if cfg.mixture:
        values["mixture"] = {name: {"task": task(entry.task), "weight": entry.weight}
                             for name, entry in cfg.mixture.items()}
    return values


def _copy_weights(source: CheckpointSource, folder: Path) -> None:
    # copyfile: the files get the reader's usual permissions, not the run's private temporary-file ones
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copyfile(source.weights / name, folder / name)
    for name in (LORA_DIR, FULL_DIR):  # the LM's own trained weights (model.lm.train lora / full)
        if (source.weights / name).is_dir():
            shutil.copytree(source.weights / name, folder / name, copy_function=shutil.copyfile)


def write_export(source: CheckpointSource, cfg: RunConfig, folder: Path, name: str) -> dict[str, Any]:
    """Fill `folder` (empty); returns the manifest."""
    if source.kind == "reference":
        model, tokenizer = build_from_source(source, cfg)
        save_checkpoint(model, folder)
        model_cfg = model.config
    else:
        _copy_weights(source, folder)
        model_cfg = read_checkpoint_config(source.weights)
        tokenizer = load_tokenizer(model_cfg.lm.tokenizer or model_cfg.lm.name)
    info = manifest(model_cfg, cfg, source, tokenizer)
    if source.kind == "export" and (source.weights / TRAINING_CONFIG).is_file():
        cfg = read_run_config(source.weights / TRAINING_CONFIG)  # the first export's training config
    if source.kind == "reference":
        info["trainable_parameters"] = sum(t.numel() for t in model.trainable_state_dict().values())
    training = {**to_dict(cfg), "model": to_dict(model_cfg)}
    write_text_atomic(folder / EXPORTED_RUN_CONFIG, yaml.safe_dump(reading_sections(cfg), sort_keys=False))
    write_text_atomic(folder / TRAINING_CONFIG, yaml.safe_dump(training, sort_keys=False))
    write_text_atomic(folder / EXPORT_MANIFEST, json.dumps(info, indent=2))
    write_text_atomic(folder / CARD, model_card(info, cfg, name))
    return info


def export(checkpoint: str, out: Path, config_files: list[str] | None = None, overwrite: bool = False,
           reference_inputs: bool = True) -> dict[str, Any]:
    """Write the exported folder `out` (complete, or not at all); returns its manifest."""
    config_files = list(config_files or [])
    source = find_source(checkpoint, config_files)
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists: choose another folder or add --overwrite")
    if out.resolve() == source.weights.resolve() or out.resolve() in source.weights.resolve().parents:
        raise ConfigError(f"--out {out} holds the weights being exported: choose another folder")
    cfg = run_config_of(source, config_files, reference_inputs)
    staging = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        info = write_export(source, cfg, staging, out.name)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def push_to_hub(folder: Path, repo_id: str, private: bool) -> str:
    """Upload `folder` as the model repository `repo_id` (created when missing); returns the commit's URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise LaunchError("--push_to_hub needs huggingface_hub: pip install huggingface_hub") from None
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=f"eP-ALM bridge exported by `main.py export` ({folder.name})")
    except Exception as error:  # noqa: BLE001 (the hub's errors: offline, no token, HTTP, network)
        raise LaunchError(f"--push_to_hub {repo_id}: the upload failed ({type(error).__name__}: {error}); the folder "
                          f"is complete at {folder}, push it again later") from None
    return str(getattr(info, "commit_url", info))


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python main.py export", __doc__, EXAMPLES)
    parser.add_argument("checkpoint", metavar="RUN",
                        help="a run, checkpoint or exported folder, or a reference .pth (with --config)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (must not exist)")
    add_reference_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    parser.add_argument("--push_to_hub", default=None, metavar="USER/NAME",
                        help="then upload it to this Hugging Face Hub model repository (HF_TOKEN)")
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: create the repository private")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> dict[str, Any]:
    args = argument_parser().parse_args(argv)
    out = stdout or sys.stdout
    check_our_defaults(args.checkpoint, args.our_defaults)
    if args.private and not args.push_to_hub:
        raise ConfigError("--private is for --push_to_hub")
    folder = Path(args.out)
    info = export(args.checkpoint, folder, args.config, args.overwrite, reference_inputs=not args.our_defaults)
    out.write(f"exported {args.checkpoint} to {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}\n")
    if args.push_to_hub:
        url = push_to_hub(folder, args.push_to_hub, args.private)
        out.write(f"pushed to https://huggingface.co/{args.push_to_hub} ({url})\n")
        info["pushed"] = url
    out.flush()
    return info


if __name__ == "__main__":
    sys.exit(run_command(main))
