"""Projection probes: does the trained connector carry more (or less) of the media's attributes than the
frozen encoder features it reads? (docs/probes.md)

For a checkpoint and a split with per-item attribute labels, small MLP probes with a fixed budget are
trained and scored on held-out items (k-fold) on three representations of each media item:
  before           the frozen encoder's features, `model.encode(media)` (K, d_enc), flattened;
  after (trained)  the checkpoint's connector outputs, `model.connect(features)`, flattened;
  after (untrained) the same connector type freshly initialised with a fixed seed (a control).
Writes probes.json, probes.md and probes.png into --out.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dataset.feature_cache import encode_items
from dataset.tasks.task_split import TaskSplit
from models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from models.connectors import build_connector
from models.epalm import EPALM
from models.modalities import get_modality
from models.user_errors import ConfigError, DataFormatError, MissingFileError, UserError
from training.command_line import run_command
from training.data import read_split
from training.probe_classifier import ProbeBudget, cross_validated_accuracy, majority_accuracy
from training.probe_labels import MediaLabels, media_labels
from training.probe_report import ProbeRow, markdown_table, write_report
from training.run_config import RunConfig, resolve_config
from training.run_state import TRAINABLE_DIR

RUN_CONFIG = "config.yaml"  # what a run folder keeps of its resolved configuration (training/run.py)

EPILOG = """examples:
  # a demo run folder: its best/ (or checkpoints/last/trainable/) and its config.yaml are found
  python -m training.probes --checkpoint outputs/demo/image_vqa/epalm --out outputs/probes/image_vqa

  # a checkpoint folder with the run's config, another data folder and split
  python -m training.probes --checkpoint outputs/vqa/best --config configs/demo/image_vqa.yaml \\
      --data_dir outputs/demo/data/image --split karpathy_val --out outputs/probes/vqa_val

  # a bigger budget, two attributes only
  python -m training.probes --checkpoint outputs/demo/audio_caption/epalm --attributes pitch timbre \\
      --steps 600 --width 128 --out outputs/probes/audio
"""


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.probes", description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="our checkpoint folder (a run's best/ or checkpoints/last/trainable/), or a run folder "
                             "(its best/ when present, else checkpoints/last/trainable/)")
    parser.add_argument("--config", action="append", default=[],
                        help="run config YAML naming the task (reader, splits); repeat to layer several. Default: "
                             "the run folder's config.yaml. Its model section is not used: the checkpoint has its own")
    parser.add_argument("--data_dir", default=None, help="the task's data folder (overrides task.data_dir)")
    parser.add_argument("--split", default=None,
                        help="the split whose media are probed (default: the config's task.test_split, "
                             "else task.val_split)")
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
                        help="k of the stratified k-fold cross-validation: each item is held out once "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the folds, the probes and the untrained connector (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=64,
                        help="media items encoded per batch (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda, cuda:1 ...")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    return parser


# --- inputs ------------------------------------------------------------------------------------------------
def _is_checkpoint(folder: Path) -> bool:
    return (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def locate_checkpoint(path: str) -> tuple[Path, Path | None]:
    """(checkpoint folder, the run folder it belongs to or None)."""
    folder = Path(path)
    if not folder.is_dir():
        raise MissingFileError(f"--checkpoint {folder}: no such folder "
                               f"(expected our checkpoint folder or a run folder)")
    if _is_checkpoint(folder):
        if folder.name == "best":
            return folder, folder.parent
        if folder.name == TRAINABLE_DIR and folder.parent.parent.name == "checkpoints":
            return folder, folder.parent.parent.parent
        return folder, None
    for candidate in (folder / "best", folder / "checkpoints" / "last" / TRAINABLE_DIR):
        if _is_checkpoint(candidate):
            return candidate, folder
    raise MissingFileError(f"--checkpoint {folder}: neither a checkpoint folder ({WEIGHTS_FILE} and {CONFIG_FILE}) "
                           f"nor a run folder with best/ or checkpoints/last/{TRAINABLE_DIR}/")


def run_config(args: argparse.Namespace, run_dir: Path | None) -> RunConfig:
    configs = args.config
    if not configs:
        if run_dir is None or not (run_dir / RUN_CONFIG).is_file():
            raise ConfigError(f"--config is needed: {args.checkpoint} is not inside a run folder with a {RUN_CONFIG}")
        configs = [str(run_dir / RUN_CONFIG)]
    argv = [item for path in configs for item in ("--config", path)]
    argv += ["--data_dir", args.data_dir] if args.data_dir else []
    argv += [item for text in args.set for item in ("--set", text)]
    return resolve_config(argv)


def read_probe_split(cfg: RunConfig, split: str | None) -> TaskSplit:
    name = split or cfg.task.test_split or cfg.task.val_split
    if not name:
        raise ConfigError("no split to probe: give --split (the config has no task.test_split or task.val_split)")
    if not Path(cfg.task.data_dir).is_dir():
        raise MissingFileError(f"data_dir {cfg.task.data_dir}: no such folder (set it with --data_dir)")
    cfg.task.max_eval_samples = None  # an evaluation cap of the run does not shrink the probes' data: --max_items
    try:
        return read_split(cfg, name, train=False)
    except UserError:
        raise
    except FileNotFoundError as error:  # the readers' messages name the file and the splits the task has
        raise MissingFileError(str(error)) from None
    except ValueError as error:
        raise DataFormatError(str(error)) from None


# --- representations ----------------------------------------------------------------------------------------
def encoder_config(model: EPALM, modality: str):
    return model.config.encoder if modality == model.modality else model.config.extra_encoders[modality]


def checked_modality(model: EPALM, modality: str, checkpoint: Path) -> str:
    if model.connector is None:
        raise ConfigError(f"{checkpoint}: a blind model (visual: false) has no encoder or connector to probe")
    if modality not in model.encoders():
        raise ConfigError(f"{checkpoint}: the split's media are {modality} but the model reads "
                          f"{sorted(model.encoders())}")
    return modality


@torch.no_grad()
def encode_media(model: EPALM, split: TaskSplit, media: list[str], batch_size: int,
                 device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Encoder features `(K, d_enc)` of each media item, with the test-time preprocessing; and the failures."""
    modality = split.modality
    preprocess = get_modality(modality).preprocessor(model.encoder_for(modality), encoder_config(model, modality),
                                                     train=False)
    return encode_items(media, split.media_root, load=preprocess,
                        encode=lambda batch: model.encode(batch.to(device), modality),
                        batch_size=batch_size, show_progress=True, desc=f"encoding {modality} for the probes")


def untrained_connector(model: EPALM, modality: str, seed: int, device: torch.device) -> torch.nn.Module:
    """The checkpoint's connector type and options, freshly initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        connector = build_connector(model.config, model.encoder_for(modality).hidden_size, model.lm)
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
    checkpoint, run_dir = locate_checkpoint(args.checkpoint)
    cfg = run_config(args, run_dir)
    split = read_probe_split(cfg, args.split)
    if args.max_items is not None:
        kept = set(list(dict.fromkeys(s.media for s in split))[: args.max_items])
        split.samples = [s for s in split if s.media in kept]
    labels = media_labels(split, args.attributes)
    if not labels.labels:
        raise DataFormatError(f"{split.annotation_file}: no attribute can be probed: "
                              + "; ".join(f"{k}: {v}" for k, v in labels.dropped.items()))
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")

    model, _ = load_checkpoint(checkpoint)
    modality = checked_modality(model, split.modality, checkpoint)
    model = model.to(device).eval()
    labelled = [m for m in labels.media if any(m in by_media for by_media in labels.labels.values())]
    computed, errors = encode_media(model, split, labelled, args.batch_size, device)
    if not computed:
        raise DataFormatError(f"{split.media_root}: none of the split's {len(labelled)} media items could be decoded "
                              f"(e.g. {next(iter(errors.items()))})")
    media = list(computed)
    reps = representations(model, modality, torch.stack([computed[m] for m in media]), budget.seed, device)
    rows = probe_rows(labels, {m: i for i, m in enumerate(media)}, reps, budget)

    report = {
        "checkpoint": str(checkpoint), "task": split.task, "split": split.split, "modality": modality,
        "annotation_file": str(split.annotation_file), "label_source": labels.source, "items": len(media),
        "unreadable": len(errors), "connector": model.config.connector, "placement": model.placement,
        "shapes": {"before": list(reps["before"].shape[1:]), "after": list(reps["after_trained"].shape[1:])},
        "budget": asdict(budget), "dropped": labels.dropped,
    }
    paths = write_report(Path(args.out), report, rows)
    print("\n" + markdown_table(rows))
    print(f"\nwritten {paths['markdown']}, {paths['json']}, {paths['plot']}")
    return {**report, "rows": rows, "paths": paths}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse `argv` and run the probes; returns the report (exceptions propagate, as training.run.main)."""
    return run_probes(argument_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(run_command(main))
