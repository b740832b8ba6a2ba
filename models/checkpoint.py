"""Checkpoints of the trainable weights only, and import of the reference's released `.pth` files.

Our format is a folder: `model.safetensors` (trainable tensors, reference key names for the bridge) and
`epalm_config.json` (the ModelConfig plus facts checked at load time), plus the LM's own trained weights when
`model.lm.train` is lora (`lora/`, peft's format) or full (`lm/`, a transformers folder): models/language_models/lm_checkpoint.py.
Each file is written under a temporary name, then renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from epalm.common.atomic_io import atomic_path, write_text_atomic
from epalm.common.config_io import ConfigError, from_dict, to_dict
from epalm.common.errors import DataFormatError, MissingFileError
from epalm.models.config import ModelConfig
from epalm.models.config import translate_legacy_encoders
from epalm.models.epalm import EPALM
from epalm.models.language_models.lm_checkpoint import check_lm_training_matches, load_lm_weights, save_lm_weights, split_lm_state
from epalm.models.language_models.lm_training import is_lm_weight

FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "epalm_config.json"


def model_config_from_dict(values: dict[str, Any], source: str = "config") -> ModelConfig:
    """Strict: an unknown key anywhere is an error naming it (the reference ignores them silently)."""
    try:
        return from_dict(ModelConfig, translate_legacy_encoders(values, source), "model")
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def save_checkpoint(
    model: EPALM, folder: str | Path, extra: dict[str, Any] | None = None, state: dict[str, torch.Tensor] | None = None
) -> Path:
    """Write the trainable weights and the config needed to rebuild the model.

    state: the trainable tensors when they must be gathered first (sharded engines); default: the model's.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.trainable_state_dict() if state is None else state
    lm_state, state = split_lm_state(model.lm, state)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": to_dict(model.config),
        "resolved": {
            "lm_layers": model.lm.num_layers,
            "layer_tokens": {str(k): v for k, v in (model.plan.layer_tokens.items() if model.plan else [])},
        },
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
        **(extra or {}),
    }
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    if lm_state:
        save_lm_weights(model.lm, folder, {k: v.detach().float().cpu().contiguous() for k, v in lm_state.items()})
    write_text_atomic(folder / CONFIG_FILE, json.dumps(meta, indent=2))
    return folder


def read_checkpoint_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"{path}: not an eP-ALM checkpoint folder (no {CONFIG_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise DataFormatError(f"{path}: expected a JSON object with a 'model' object (the model's config)")
    return model_config_from_dict(meta["model"], source=str(path))


def trainable_layout(cfg: ModelConfig) -> dict[str, Any]:
    """The config keys that decide which trainable tensors a model has (their widths aside)."""
    prompt_len = cfg.prompt_len if cfg.prompt_tuning else 0  # the factory builds no prompt for either
    layout: dict[str, Any] = {"visual": cfg.visual, "prompt_len": prompt_len,
                              "unfreeze_text_layer_norm": cfg.unfreeze_text_layer_norm, "lm.train": cfg.lm.train}
    if cfg.lm.train == "lora":  # its target modules are compared once resolved, at load (models/language_models/lm_checkpoint.py)
        layout["lm.lora.r"] = cfg.lm.lora.r
    if cfg.visual:
        layout.update(connector=cfg.connector, shared_connector=cfg.shared_connector,
                      unfreeze_vision_layer_norm=cfg.unfreeze_vision_layer_norm)
        if not cfg.shared_connector:
            layout["injected_hidden_states"] = cfg.injected_hidden_states
    if prompt_len > 0:
        layout["mlp"] = cfg.mlp
    return layout


def layout_mismatches(saved: ModelConfig, configured: ModelConfig) -> list[str]:
    """`model.key: checkpoint X, configured Y` for each key whose difference changes the trainable tensors."""
    ours, theirs = trainable_layout(configured), trainable_layout(saved)
    return [f"model.{key}: checkpoint {theirs.get(key, '-')!r}, configured {ours.get(key, '-')!r}"
            for key in dict.fromkeys([*theirs, *ours]) if theirs.get(key) != ours.get(key)]


def load_trainable_weights(model: EPALM, state: dict[str, torch.Tensor], source: str, partial: bool = False,
                           advice: str = "") -> None:
    """Strict load of the trainable tensors: every one present (partial: the model's tensors the state lacks keep
    theirs), no extra, every shape equal. advice: what to do when it does not fit, said after the source."""
    expected = {k: tuple(v.shape) for k, v in model.trainable_state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = []
    for key in sorted(found if partial else set(expected) | set(found)):
        if expected.get(key) != found.get(key):
            problems.append(f"  {key}: expected {expected.get(key, 'absent')}, found {found.get(key, 'absent')}")
    if problems:
        raise DataFormatError(f"{source} does not fit the configured model{advice}:\n" + "\n".join(problems))
    model.load_state_dict(state, strict=False)  # strictness over the trainable keys is checked just above


# Format 1's names (and the reference's `connector.{i}.*`) -> today's, given the model's main modality.
_FORMAT_1_NAMES = re.compile(r"^(connector|encoder|extra_connectors|extra_encoders)\.")


def current_key(key: str, main_modality: str | None) -> str:
    """A trainable tensor's name in format 1 (or a reference file) -> its name today."""
    match = _FORMAT_1_NAMES.match(key)
    if match is None:
        return key
    part, rest = match.group(1), key[match.end():]
    if part.startswith("extra_"):
        return f"{part.removeprefix('extra_')}.{rest}"
    return f"{part}s.{main_modality}.{rest}"


def with_current_keys(state: dict[str, torch.Tensor], main_modality: str | None) -> dict[str, torch.Tensor]:
    return {current_key(key, main_modality): value for key, value in state.items()}


def load_checkpoint_weights(model: EPALM, folder: str | Path) -> None:
    folder = Path(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise MissingFileError(f"{path}: no trainable weights here")
    state = with_current_keys(load_file(str(path)), model.modality)
    if (folder / CONFIG_FILE).is_file():  # how the checkpoint's LM trained (none of it, before model.lm.train)
        check_lm_training_matches(model.lm, folder, json.loads((folder / CONFIG_FILE).read_text()))
    lm_names = [k for k in model.trainable_state_dict() if is_lm_weight(k, model.lm.finetuning)]
    state.update(load_lm_weights(model.lm, folder, lm_names))
    load_trainable_weights(model, state, source=str(path))


@dataclass
class BridgeInit:
    """What `load_bridge_weights` did: tensors loaded, model tensors left at their start (fresh), and how the
    earlier run's LM trained (its own trained weights are not read)."""

    loaded: list[str]
    fresh: list[str]
    source_lm_train: str

    def describe(self, folder: Path) -> str:
        def names(keys: list[str]) -> str:
            shown = ", ".join(keys[:4]) + (f" ... ({len(keys)} in all)" if len(keys) > 4 else "")
            return shown or "none"

        return (f"init_from {folder}: loaded {len(self.loaded)} bridge tensors ({names(self.loaded)}); starting "
                f"fresh: {len(self.fresh)} tensors ({names(self.fresh)}); the earlier run's LM was "
                f"{self.source_lm_train}, its own trained weights (if any) are not read: the LM starts from "
                f"model.lm.name")


def load_bridge_weights(model: EPALM, folder: str | Path) -> BridgeInit:
    """A two-stage start (`--init_from`): the bridge (connectors, soft prompt, unfrozen LayerNorms) of an earlier
    run's checkpoint, whatever its `model.lm.train` was and whatever this model's is (frozen -> LoRA, frozen ->
    full, as LLaVA's and multi_token's second stages). Every bridge tensor of the file must fit one of the model's;
    the model's trainable tensors the file lacks (the LM's LoRA adapters, ...) keep their initialisation."""
    folder = Path(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise MissingFileError(f"--init_from {folder}: no {WEIGHTS_FILE} here")
    meta = json.loads((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).is_file() else {}
    source_lm = meta.get("model", {}).get("lm", {}).get("train", "frozen")
    state = {k: v for k, v in with_current_keys(load_file(str(path)), model.modality).items()
             if not is_lm_weight(k, source_lm)}  # the earlier LM's own weights live in lora/ or lm/, not here
    load_trainable_weights(model, state, f"--init_from {path}: its bridge", partial=True,
                           advice=" (set the model keys as the earlier run had them)")
    return BridgeInit(sorted(state), sorted(set(model.trainable_state_dict()) - set(state)), source_lm)


def load_checkpoint(folder: str | Path, **build_kwargs) -> tuple[EPALM, Any]:
    """Rebuild the model from the checkpoint's own config and load its weights; returns (model, tokenizer)."""
    from epalm.models.factory import build_model  # the factory imports this module's neighbours

    model, tokenizer = build_model(read_checkpoint_config(folder), **build_kwargs)
    load_checkpoint_weights(model, folder)
    return model, tokenizer


# --- the reference's released .pth files ------------------------------------------------------------------
_CONNECTOR_KEY = re.compile(r"^connector\.(\d+)\.(weight|bias)$")
_PROMPT_KEY = re.compile(r"^prompt_module\.prefix_embedding\.(\d+)\.(weight|bias)$")


def read_reference_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The `model` tensors and the `config` dict of a reference checkpoint (pickle, read with weights_only)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except Exception as error:  # a pickle needing arbitrary classes is refused, never executed
        raise DataFormatError(f"{path}: cannot read as a reference eP-ALM checkpoint with weights_only=True "
                              f"({error})") from error
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        found = f"a dict with keys {sorted(map(str, blob))[:8]}" if isinstance(blob, dict) else type(blob).__name__
        raise DataFormatError(f"{path}: expected a dict with a 'model' dict of tensors (the reference's format), "
                              f"found {found}")
    config = blob.get("config") if isinstance(blob.get("config"), dict) else {}
    return blob["model"], config


def unknown_reference_keys(state: dict[str, Any]) -> list[str]:
    """Keys of a reference checkpoint's `model` dict that are neither a connection nor a soft prompt tensor."""
    return sorted(k for k in state if not (_CONNECTOR_KEY.match(k) or _PROMPT_KEY.match(k)))


def reference_facts(state: dict[str, torch.Tensor], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the tensor shapes (and the stored config, where present) say about the model."""
    connectors = sorted({int(m.group(1)) for k in state if (m := _CONNECTOR_KEY.match(k))})
    prompt_layers = sorted({int(m.group(1)) for k in state if (m := _PROMPT_KEY.match(k))})
    facts: dict[str, Any] = {}
    if connectors:
        weight = state["connector.0.weight"]
        facts.update(encoder_size=weight.shape[1], lm_size=weight.shape[0], connectors=len(connectors))
        stored_k = (config or {}).get("injected_hidden_states")
        facts["shared_connector"] = len(connectors) == 1 and (stored_k or 1) > 1
        facts["injected_hidden_states"] = stored_k if facts["shared_connector"] else len(connectors)
    if prompt_layers:
        table = state["prompt_module.prefix_embedding.0.weight"]
        facts.update(prompt_tuning=True, prompt_len=table.shape[0], prompt_width=table.shape[1],
                     mlp=prompt_layers != [0])
    else:
        facts["prompt_tuning"] = False
    return facts


def reference_state(model: EPALM) -> dict[str, torch.Tensor]:
    """The trainable tensors under the reference's key names (`connector.{i}.*`, `prompt_module.*`), for a model of
    one modality whose only trainable parts are the reference's (its `model` dict of a released `.pth`)."""
    state = model.trainable_state_dict()
    prefix = f"connectors.{model.modality}."
    renamed = {("connector." + key[len(prefix):] if key.startswith(prefix) else key): value
               for key, value in state.items()}
    unknown = unknown_reference_keys(renamed)
    if unknown:
        raise ValueError(f"the reference's format has no place for {unknown}")
    return renamed


def load_reference_checkpoint(model: EPALM, path: str | Path) -> dict[str, Any]:
    """Load released eP-ALM weights into a configured model; any mismatch fails listing the shapes."""
    state, config = read_reference_state(path)
    facts = reference_facts(state, config)
    unknown = unknown_reference_keys(state)
    if unknown:
        raise DataFormatError(f"{path}: keys this project does not know how to load: {unknown}")
    cfg = model.config
    mismatches = []
    for key in ("injected_hidden_states", "shared_connector", "prompt_len", "mlp"):
        if key in facts and getattr(cfg, key) != facts[key]:
            mismatches.append(f"  {key}: configured {getattr(cfg, key)!r}, checkpoint has {facts[key]!r}")
    state = with_current_keys({k: v.float() for k, v in state.items()}, model.modality)
    try:
        load_trainable_weights(model, state, source=str(path))
    except DataFormatError as error:
        detail = ("\n" + "\n".join(mismatches)) if mismatches else ""
        raise DataFormatError(f"{error}{detail}") from None
    return facts
