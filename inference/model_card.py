"""What an exported folder says about its model: the manifest (`bridge.json`) and the model card (README.md).

Read from the run without loading a model: the resolved config, the trainable tensors' shapes (epalm_config.json),
the training log's last step, the final evaluation metrics (`eval/<split>_metrics.json`), and the tokenizer's
additions (the QA separator `</a>`, the pad token), which loading the folder checks again.
"""
from __future__ import annotations

import json
import re
from math import prod
from pathlib import Path
from typing import Any

import yaml

from epalm.inference.checkpoint_source import EXPORT_MANIFEST, CheckpointSource, tokenizer_additions
from epalm.models.checkpoint import CONFIG_FILE
from epalm.models.config import ModelConfig
from epalm.training.run_config import RunConfig

CARD = "README.md"
FORMAT = "epalm-export"
VERSION = 1


def trained_steps(run: Path | None) -> int | None:
    """The last optimizer step the run's training log records."""
    log = run / "train_log.jsonl" if run else None
    if log is None or not log.is_file():
        return None
    steps = [json.loads(line).get("step") for line in log.read_text().splitlines() if line.strip()]
    return max((step for step in steps if isinstance(step, int)), default=None)


def run_folder(source: CheckpointSource) -> Path | None:
    """The run the weights come from (its training log and evaluations), when there is one."""
    if source.kind in ("run", "folder") and source.run_config is not None:
        return source.run_config.parent
    return None


def run_record(source: CheckpointSource) -> tuple[int | None, dict[str, dict[str, Any]]]:
    """The trained steps and final metrics known of the weights' run: an exported folder's manifest (an export of
    an export keeps what the first one knew), else the run's training log and evaluations."""
    if source.kind == "export":
        earlier = json.loads((source.weights / EXPORT_MANIFEST).read_text())
        return earlier.get("trained_steps"), earlier.get("metrics", {})
    run = run_folder(source)
    return trained_steps(run), final_metrics(run)


def final_metrics(run: Path | None) -> dict[str, dict[str, Any]]:
    """`{split: {name, value, num_samples}}` of the run's final evaluations (not the per-epoch ones)."""
    found: dict[str, dict[str, Any]] = {}
    if run is None or not (run / "eval").is_dir():
        return found
    for path in sorted((run / "eval").rglob("*_metrics.json")):
        name = str(path.relative_to(run / "eval")).removesuffix("_metrics.json")
        if re.search(r"_epoch\d+$", name):
            continue
        metrics = json.loads(path.read_text())
        main = metrics.get("main", {})
        found[name] = {"name": main.get("name"), "value": main.get("value"), "num_samples": metrics.get("num_samples")}
    return found


def trainable_parameters(weights: Path) -> int | None:
    meta = json.loads((weights / CONFIG_FILE).read_text())
    shapes = meta.get("shapes")
    return sum(prod(shape) for shape in shapes.values()) if isinstance(shapes, dict) else None


def manifest(model_cfg: ModelConfig, cfg: RunConfig, source: CheckpointSource, tokenizer) -> dict[str, Any]:
    steps, metrics = run_record(source)
    encoders = {name: {key: getattr(encoder, key) for key in ("type", "name", "checkpoint")}
                for name, encoder in model_cfg.encoders.items()} if model_cfg.visual else {}
    return {
        "format": FORMAT, "version": VERSION,
        "lm": {"name": model_cfg.lm.name, "tokenizer": model_cfg.lm.tokenizer or model_cfg.lm.name,
               "train": model_cfg.lm.train},
        "encoders": encoders,
        "connector": model_cfg.connector if model_cfg.visual else None,
        "injection_mode": model_cfg.injection_mode,
        "tokenizer_additions": tokenizer_additions(tokenizer),
        "task": {"reader": cfg.task.reader, "mixture": sorted(cfg.mixture),
                 "known": source.run_config is not None or source.kind == "reference"},
        "trained_steps": steps,
        "trainable_parameters": trainable_parameters(source.weights) if source.kind != "reference" else None,
        "metrics": metrics,
        "exported_from": {"kind": source.kind, "path": str(source.weights)},
    }


def _hub_id(name: str) -> str | None:
    """`name` when it reads as a hub id (owner/model, not a local path)."""
    return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not Path(name).exists() else None


def _data_lines(cfg: RunConfig, known: bool) -> list[str]:
    if not known:
        return [f"- unknown: these weights were exported without their run's config.yaml, so prompts are read "
                f"with the defaults (task reader `{cfg.task.reader}`, `{cfg.task.prompt_template}`)"]
    tasks = {name: entry.task for name, entry in cfg.mixture.items()} or {"": cfg.task}
    lines = []
    for name, task in tasks.items():
        splits = ", ".join(f"{what} `{split}`" for what, split in (("train", task.train_split), ("validation",
                           task.val_split), ("test", task.test_split)) if split)
        label = f"{name}: " if name else ""
        lines.append(f"- {label}task reader `{task.reader}` on `{task.data_dir}` ({splits})")
    return lines


def model_card(info: dict[str, Any], cfg: RunConfig, folder_name: str) -> str:
    """README.md: what the model is, what it was trained on, how well it does, how to train and load it."""
    lm, encoders = info["lm"], info["encoders"]
    base = [hub for hub in [_hub_id(lm["name"]), *(_hub_id(e["name"] or "") for e in encoders.values())] if hub]
    front = {"library_name": "epalm-trainer", "tags": ["epalm", "multimodal", *sorted(encoders)]}
    if base:
        front["base_model"] = base[0] if len(base) == 1 else base
    reads = ", ".join(f"{modality} through `{e['name']}` ({e['type']})" for modality, e in encoders.items())
    metrics = [f"| {split} | {m['name']} | {m['value']} | {m['num_samples']} |" for split, m in info["metrics"].items()]
    metric_table = "\n".join(["| split | metric | value | samples |", "|---|---|---|---|", *metrics]) if metrics \
        else "No evaluation was recorded with these weights."
    steps = info["trained_steps"]
    separator = info["tokenizer_additions"]["qa_separator"]
    intro = (f"A perceptually augmented language model trained with [eP-ALM](https://github.com/mshukor/eP-ALM)'s "
             f"method by the eP-ALM trainer: the frozen LM `{lm['name']}` reads "
             f"{reads or 'no media (a blind baseline)'}, joined by a trained `{info['connector']}` connector and a "
             f"soft prompt ({info['trainable_parameters'] or 'unknown'} trainable parameters; the LM is "
             f"{lm['train']}; injection mode `{info['injection_mode']}`). This folder holds only what was trained; "
             f"the frozen models load from the hub or local folders under the names above.")
    commands = (f"or `python main.py chat --checkpoint {folder_name}`, `python main.py predict --checkpoint "
                f"{folder_name} --media photo.jpg --prompt \"...\"`, `python main.py serve --checkpoint "
                f"{folder_name}`. Loading needs the frozen LM (`{lm['name']}`, tokenizer `{lm['tokenizer']}`) and "
                f"encoders under those names; the tokenizer must give `{separator['token']}` the id "
                f"{separator['id']} (checked at load).")
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {folder_name}

{intro}

## Task and data

{chr(10).join(_data_lines(cfg, info['task']['known']))}

Trained for {steps if steps is not None else 'an unrecorded number of'} optimizer steps.

## Metrics

{metric_table}

## Training

```
python main.py --config training_config.yaml --data_dir /path/to/data --output_dir outputs/retrained
```

`training_config.yaml` is the run's resolved configuration (every key, the defaults included).

## Loading

```python
from epalm.inference import Bridge
bridge = Bridge.load("{folder_name}")            # this folder (after `git clone` or `huggingface-cli download`)
print(bridge.ask("what is in the picture?", images="photo.jpg"))
```

{commands}

## Files

| file | holds |
|---|---|
| `model.safetensors` | the trained tensors (connectors, soft prompt) |
| `epalm_config.json` | the model's resolved config (LM, encoders, connector, injection) |
| `run_config.yaml` | how prompts are read and answers generated (task and eval sections) |
| `training_config.yaml` | the training run's whole configuration |
| `bridge.json` | the LM's and encoders' names, the tokenizer's additions, steps, metrics |
"""
