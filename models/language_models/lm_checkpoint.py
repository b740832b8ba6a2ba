"""The LM's own trained weights in a checkpoint folder, each in its library's format (models/language_models/lm_training.py).

- `model.lm.train: lora`: `lora/adapter_model.safetensors` + `lora/adapter_config.json`, peft's format (keys
  `base_model.model.<module path>.lora_A.weight`): `PeftModel.from_pretrained(lm, folder / "lora")` loads them
  into the plain LM (the same vocabulary: ours adds `</a>` where the LM lacks it).
- `model.lm.train: full`: `lm/model.safetensors` (every LM weight, float32, the LM's own key names; as large as
  the LM in float32) + `lm/config.json`: a transformers folder, `AutoModelForCausalLM.from_pretrained(folder / "lm")`.

The connectors and the prompt stay in `model.safetensors` (models/checkpoint.py); a frozen LM writes nothing here.
Every file is written under a temporary name, then renamed.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from epalm.common.atomic_io import atomic_path, write_text_atomic
from epalm.common.errors import ConfigError, MissingFileError
from epalm.models.language_models.frozen_lm import FrozenLanguageModel
from epalm.models.language_models.lm_training import ADAPTER_NAME, LM_PREFIX, is_lm_weight

LORA_DIR = "lora"
LORA_WEIGHTS = "adapter_model.safetensors"
LORA_CONFIG = "adapter_config.json"
FULL_DIR = "lm"
FULL_WEIGHTS = "model.safetensors"
PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before the LM's module paths


def peft_key(name: str) -> str:
    """Our EPALM parameter name -> peft's saved name (peft drops the adapter name from every key)."""
    return PEFT_PREFIX + name[len(LM_PREFIX):].replace(f".{ADAPTER_NAME}.", ".")


def split_lm_state(lm: FrozenLanguageModel, state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(the LM's own trained tensors, the rest) of a trainable state dict."""
    mine = {k: v for k, v in state.items() if is_lm_weight(k, lm.finetuning)}
    return mine, {k: v for k, v in state.items() if k not in mine}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def save_lm_weights(lm: FrozenLanguageModel, folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write the LM's trained tensors (EPALM names, already float32 on the CPU) in their library's format."""
    if lm.finetuning == "lora":
        _save_tensors(folder / LORA_DIR / LORA_WEIGHTS, {peft_key(k): v for k, v in tensors.items()})
        config = lm.lora_config.to_dict()
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}  # as peft's save_pretrained
        write_text_atomic(folder / LORA_DIR / LORA_CONFIG, json.dumps(config, indent=2, sort_keys=True))
    elif lm.finetuning == "full":
        _save_tensors(folder / FULL_DIR / FULL_WEIGHTS, {k[len(LM_PREFIX):]: v for k, v in tensors.items()})
        write_text_atomic(folder / FULL_DIR / "config.json", lm.model.config.to_json_string())


def check_lm_training_matches(lm: FrozenLanguageModel, folder: Path, meta: dict) -> None:
    """The checkpoint's LM was trained as the configured model's is (else the strict key check would list every
    LoRA key, or every LM weight, as missing or extra; LoRA's alpha would not show at all)."""
    recorded = meta.get("model", {}).get("lm", {}).get("train", "frozen")  # checkpoints before the key: frozen
    if recorded != lm.finetuning:
        raise ConfigError(f"{folder}: its LM was trained with model.lm.train={recorded}, the configured model's is "
                          f"{lm.finetuning}: set `--set model.lm.train={recorded}` (with the same model.lm.lora "
                          f"settings) to load it")
    if recorded != "lora":
        return
    path = folder / LORA_DIR / LORA_CONFIG
    if not path.is_file():
        raise MissingFileError(f"{path}: missing (a checkpoint of a LoRA-trained LM holds its adapters in {LORA_DIR}/)")
    saved = json.loads(path.read_text())
    live = lm.lora_config
    pairs = {"r": (saved.get("r"), live.r), "alpha": (saved.get("lora_alpha"), live.lora_alpha),
             "target_modules": (sorted(saved.get("target_modules") or []), sorted(live.target_modules))}
    different = [f"{key}: checkpoint {a}, configured {b}" for key, (a, b) in pairs.items() if a != b]
    if different:
        raise ConfigError(f"{path}: the LoRA adapters do not fit model.lm.lora ({'; '.join(different)})")


def load_lm_weights(lm: FrozenLanguageModel, folder: Path, expected: list[str]) -> dict[str, torch.Tensor]:
    """The LM's trained tensors of a checkpoint under EPALM names (`expected`: the model's names for them; a
    saved key that maps to none keeps a name of its own, for the strict check to report)."""
    if lm.finetuning == "lora":
        path = folder / LORA_DIR / LORA_WEIGHTS
        ours = {peft_key(name): name for name in expected}
        rename = lambda key: ours.get(key, f"{LORA_DIR}/{key}")  # noqa: E731
    elif lm.finetuning == "full":
        path = folder / FULL_DIR / FULL_WEIGHTS
        rename = lambda key: LM_PREFIX + key  # noqa: E731
    else:
        return {}
    if not path.is_file():
        raise MissingFileError(f"{path}: missing (the checkpoint's LM was trained with model.lm.train={lm.finetuning})")
    return {rename(k): v for k, v in load_file(str(path)).items()}
