"""Projection probes: does the trained connector carry more (or less) of the media's attributes than the
frozen encoder features it reads? (docs/probes.md)

For a checkpoint and a split with per-item attribute labels, small MLP probes with a fixed budget are
trained and scored on held-out items (k-fold) on three representations of each media item:
  before           the frozen encoder's features, `model.encode(media)` (K, d_enc), flattened;
  after (trained)  the checkpoint's connector outputs, `model.connect(features)`, flattened;
  after (untrained) the same connector type freshly initialised with a fixed seed (a control).
Each item is held out once (stratified k-fold); the three representations share folds and probe seed.
Writes probes.json, probes.md and probes.png into --out.

--checkpoint: a run folder (its best/ when present, else checkpoints/last/trainable/; its config.yaml names
the task), a checkpoint folder of ours (model.safetensors + epalm_config.json; give --config unless it lies
in a run folder), or a released eP-ALM .pth file with the --config files that build its model and name the
task. Of the run configuration only the task section is read (reader, data folder, media root); the model is
the checkpoint's own.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from epalm.common.command_line import add_debug_flag, command_parser
from epalm.common.errors import ConfigError, DataFormatError, MissingFileError
from epalm.dataset.feature_cache import encode_items
from epalm.dataset.tasks import TASK_READERS
from epalm.dataset.tasks.task_split import TaskSplit
from epalm.inference.checkpoint_source import CheckpointSource, find_source, load_model, pick_device
from epalm.models.connectors import build_connector
from epalm.models.epalm import EPALM
from epalm.models.modalities import get_modality
from epalm.studies.probes.classifier import ProbeBudget, cross_validated_accuracy, majority_accuracy
from epalm.studies.probes.labels import MediaLabels, media_labels
from epalm.studies.probes.report import ProbeRow, markdown_table, write_report
from epalm.training.data import read_split
from epalm.training.preflight import check_reader_options, check_registered
from epalm.training.run_config import RunConfig, resolve_config

EPILOG = """examples:
  # a demo run folder: its best/ (or checkpoints/last/trainable/) and its config.yaml are found
  python main.py probe --checkpoint outputs/demo/image_vqa/epalm --out outputs/probes/image_vqa

  # a checkpoint folder outside a run, the config naming the task, another data folder and split
  python main.py probe --checkpoint ckpt/vqa_best --config configs/demo/image_vqa.yaml \\
      --data_dir outputs/demo/data/image --split karpathy_val --out outputs/probes/vqa_val

  # a bigger budget, two attributes only (python -m epalm.studies.probes is the same command)
  python -m epalm.studies.probes --checkpoint outputs/demo/audio_caption/epalm --attributes pitch timbre \\
      --steps 600 --width 64 --out outputs/probes/audio"""


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python main.py probe", __doc__, EPILOG)
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder, a checkpoint folder or a reference .pth (see above)")
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="run config naming the task (default: the run's config.yaml); repeatable")
    parser.add_argument("--data_dir", default=None, help="the task's data folder (overrides task.data_dir)")
    parser.add_argument("--split", default=None,
                        help="the split probed (default: task.test_split, else task.val_split)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set task.media_root=/data/images")
    parser.add_argument("--out", required=True, help="folder for probes.json, probes.md and probes.png")
    parser.add_argument("--attributes", nargs="+", default=None, metavar="NAME",
                        help="probe only these attributes (default: every attribute the split labels)")
    parser.add_argument("--max_items", type=int, default=None,
                        help="probe at most this many media items (the first ones of the split)")
    defaults = ProbeBudget()
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="full-batch AdamW steps per probe (default: %(default)s)")
    parser.add_argument("--width", type=int, default=defaults.width,
                        help="hidden width of the MLP probe (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="probe learning rate (default: %(default)s)")
    parser.add_argument("--weight_decay", type=float, default=defaults.weight_decay,
                        help="probe AdamW weight decay (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=defaults.folds,
                        help="k of the stratified k-fold cross-validation (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the folds, the probes and the untrained connector (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=64,
                        help="media items encoded per batch (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    add_debug_flag(parser)
    return parser


# --- inputs ------------------------------------------------------------------------------------------------
def task_config(args: argparse.Namespace, source: CheckpointSource) -> RunConfig:
    """The run configuration whose task section names the data: --config, else the run's config.yaml."""
    configs = args.config or ([str(source.run_config)] if source.run_config else [])
    if not configs:
        raise ConfigError(f"--checkpoint {args.checkpoint} is not part of a run folder with a config.yaml: give "
                          f"the run config that names the task, e.g. --config configs/demo/image_vqa.yaml")
    argv = [item for path in configs for item in ("--config", path)]
    argv += ["--data_dir", args.data_dir] if args.data_dir else []
    argv += [item for text in args.set for item in ("--set", text)]
    cfg = resolve_config(argv)
    check_registered("task.reader", TASK_READERS, cfg.task.reader)
    check_reader_options(cfg)
    return cfg


def read_probe_split(cfg: RunConfig, split: str | None) -> TaskSplit:
    name = split or cfg.task.test_split or cfg.task.val_split
    if not name:
        raise ConfigError("no split to probe: give --split (the config has no task.test_split or task.val_split)")
    if not Path(cfg.task.data_dir).is_dir():
        raise MissingFileError(f"data_dir {cfg.task.data_dir}: no such folder (set it with --data_dir)")
    cfg.task.max_eval_samples = None  # an evaluation cap of the run does not shrink the probes' data: --max_items
    task_split = read_split(cfg, name, train=False)
    if task_split.kind == "chat":
        raise ConfigError(f"{task_split.annotation_file}: chat rows (several media per sample) cannot be probed; "
                          f"give a QA or caption split (one media item per sample)")
    return task_split


# --- representations ----------------------------------------------------------------------------------------
def checked_modality(model: EPALM, modality: str, checkpoint: Path) -> str:
    """The split's modality, if the model has an encoder and a connector for it."""
    if model.placement is None:
        raise ConfigError(f"{checkpoint}: a blind model (visual: false) has no encoder or connector to probe")
    if modality not in model.encoders:
        raise ConfigError(f"{checkpoint}: the split's media are {modality} but the model reads {model.modalities}")
    return modality


@torch.no_grad()
def encode_media(model: EPALM, split: TaskSplit, media: list[str], batch_size: int,
                 device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Encoder features `(K, d_enc)` of each media item, with the test-time preprocessing; and the failures."""
    modality = split.modality
    preprocess = get_modality(modality).preprocessor(model.encoder_for(modality), model.config.encoders[modality],
                                                     train=False)
    return encode_items(media, split.media_root, load=preprocess,
                        encode=lambda batch: model.encode(batch.to(device), modality),
                        batch_size=batch_size, show_progress=True, desc=f"encoding {modality} for the probes")


def untrained_connector(model: EPALM, modality: str, seed: int, device: torch.device) -> torch.nn.Module:
    """The checkpoint's connector type and options, freshly initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        connector = build_connector(model.config, model.encoder_for(modality), model.lm)
    return connector.to(device).eval()


@torch.no_grad()
def representations(model: EPALM, modality: str, features: torch.Tensor, seed: int,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """The three probed representations of `(M, K, d_enc)` features, each `(M, ...)` on the CPU in float32."""
    features = features.to(device)
    fresh = untrained_connector(model, modality, seed, device)
    return {
        "before": features.float().cpu(),
        "after_trained": model.connect(features, modality).float().cpu(),
        "after_untrained": fresh(features.to(next(fresh.parameters()).dtype)).float().cpu(),
    }


# --- probes -------------------------------------------------------------------------------------------------
def probe_rows(labels: MediaLabels, index: dict[str, int], reps: dict[str, torch.Tensor],
               budget: ProbeBudget) -> list[ProbeRow]:
    rows = []
    jobs = [(name, key) for name in labels.labels for key in reps]
    bar = tqdm(total=len(jobs), desc="probes", unit="probe")
    for name, by_media in sorted(labels.labels.items()):
        items = [media for media in by_media if media in index]
        values = sorted({by_media[media] for media in items})
        y = torch.tensor([values.index(by_media[media]) for media in items])
        rows_of = torch.tensor([index[media] for media in items])
        scores = {}
        for key, rep in reps.items():
            bar.set_postfix_str(f"{name} / {key}")
            scores[key] = cross_validated_accuracy(rep[rows_of].flatten(1), y, budget).accuracy
            bar.update()
        rows.append(ProbeRow(attribute=name, values=values, items=len(items), chance=1 / len(values),
                             majority=majority_accuracy(y, budget), **scores))
    bar.close()
    return rows


def run_probes(args: argparse.Namespace) -> dict[str, Any]:
    budget = ProbeBudget(args.steps, args.width, args.lr, args.weight_decay, args.folds, args.seed)
    if args.max_items is not None and args.max_items < 2:
        raise ConfigError(f"--max_items must be >= 2, got {args.max_items}")
    # Cheap checks and the labels first; the model is built only when there is something to probe.
    reference = Path(args.checkpoint).is_file()
    source = find_source(args.checkpoint, args.config if reference else [])
    pick_device(args.device)
    cfg = task_config(args, source)
    split = read_probe_split(cfg, args.split)
    if args.max_items is not None:
        kept = set(list(dict.fromkeys(s.media for s in split))[: args.max_items])
        split.samples = [s for s in split if s.media in kept]
    labels = media_labels(split, args.attributes)
    if not labels.labels:
        raise DataFormatError(f"{split.annotation_file}: no attribute can be probed: "
                              + "; ".join(f"{k}: {v}" for k, v in labels.dropped.items()))

    loaded = load_model(args.checkpoint, args.config if reference else [], args.device)
    model, device = loaded.model, loaded.device
    modality = checked_modality(model, split.modality, source.weights)
    labelled = [m for m in labels.media if any(m in by_media for by_media in labels.labels.values())]
    computed, errors = encode_media(model, split, labelled, args.batch_size, device)
    if not computed:
        raise DataFormatError(f"{split.media_root}: none of the split's {len(labelled)} media items could be decoded "
                              f"(e.g. {next(iter(errors.items()))})")
    media = list(computed)
    reps = representations(model, modality, torch.stack([computed[m] for m in media]), budget.seed, device)
    rows = probe_rows(labels, {m: i for i, m in enumerate(media)}, reps, budget)

    report = {
        "checkpoint": str(source.weights), "task": split.task, "split": split.split, "modality": modality,
        "annotation_file": str(split.annotation_file), "label_source": labels.source, "items": len(media),
        "unreadable": len(errors), "connector": model.config.connector, "placement": model.placement.name,
        "shapes": {"before": list(reps["before"].shape[1:]), "after": list(reps["after_trained"].shape[1:])},
        "budget": asdict(budget), "dropped": labels.dropped,
    }
    paths = write_report(Path(args.out), report, rows)
    print("\n" + markdown_table(rows))
    print(f"\nwritten {paths['markdown']}, {paths['json']}, {paths['plot']}")
    return {**report, "rows": rows, "paths": paths}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse `argv` and run the probes; returns the report (exceptions propagate, as epalm.training.run.main)."""
    return run_probes(argument_parser().parse_args(argv))

