"""The run configuration: YAML files under configs/, command-line flags and `--set key=value` overrides.

Precedence: dataclass defaults < `--config` files (later ones win) < flags < `--set`. A path a config file names
is read relative to that file, as its `include:` is (training/config_paths.py). The resolved configuration is
written into the run folder as `config.yaml`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from epalm.common.atomic_io import write_text_atomic
from epalm.common.command_line import add_debug_flag, command_parser
from epalm.common.config_io import ConfigError, from_dict, merge, parse_override, set_dotted, to_dict, yaml_problem
from epalm.common.errors import MissingFileError, check_choice, did_you_mean
from epalm.dataset.chat_template import TEXT_FORMATS
from epalm.dataset.collate import DEFAULT_CAPTION_PROMPT, PADDING_SIDES
from epalm.dataset.prompt_template import DEFAULT_QA_TEMPLATE, check_prompt_template
from epalm.models.config import ModelConfig, translate_legacy_encoders
from epalm.models.sampling import SamplingSettings
from epalm.training.config_paths import INPUT_PATH_KEYS, resolve_config_paths
from epalm.training.step_schedule import check_interval


@dataclass
class TaskConfig:
    """reader: a name in epalm.dataset.tasks.TASK_READERS (vqa_v2, gqa, coco_caption, msrvtt_caption, video_qa,
    audiocaps, chat). Splits name the reader's files; an empty split is not used. metric: vqa | exact_match |
    caption (chosen from the reader when empty). prompt_template: the QA prompt, `{question}` replaced by
    the question, in training and evaluation alike (dataset/prompt_template.py); captions ignore it.

    chat_template (chat rows): "auto" (the tokenizer's chat template when it has one, else the plain one),
    "plain" or "tokenizer" (dataset/chat_template.py). max_instances (chat rows): keep only the first n media
    instances of each row, the others' placeholders get no positions (the "first instance only" ablation).

    text_format (QA and caption tasks): "reference" (the reference's text, above) or "chat" (an instruct LM: the
    sample as a one-turn conversation through the tokenizer's chat template; the user turn is the filled
    prompt_template, or caption_prompt for captions; dataset/collate.py).

    check_media: before anything is built, look at every media file of each split (an image's header; other
    files: there and not empty; training/data_checks.py): a split with no readable file is an error, failures
    are named on the console, training leaves their samples out, non-square images a squashing encoder will
    distort are counted. max_unreadable_share: above this share of a split's files failing, that line is a
    `warning:` (a `note:` below it)."""

    reader: str = "vqa_v2"
    data_dir: str = "data"
    media_root: str | None = None
    train_split: str = "karpathy_train"
    val_split: str = "karpathy_val"
    test_split: str = "karpathy_test"
    reader_options: dict[str, Any] = field(default_factory=dict)
    metric: str = ""
    vqa_eval_version: str = "2021"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    chat_template: str = "auto"
    max_instances: int | None = None
    prompt_template: str = DEFAULT_QA_TEMPLATE
    check_media: bool = True
    max_unreadable_share: float = 0.05
    text_format: str = "reference"
    caption_prompt: str = DEFAULT_CAPTION_PROMPT

    def __post_init__(self) -> None:
        check_prompt_template(self.prompt_template)
        check_choice("task.text_format", self.text_format, TEXT_FORMATS)


FUSED_ADAMW = ("auto", True, False)


@dataclass
class TrainConfig:
    """lr is the connector's, prompt_lr the soft prompt's, lm_lr the LM's when it trains too (`model.lm.train`
    lora or full; none: 2e-4 for LoRA, 1e-5 for full fine-tuning); all follow the same warm-up + cosine schedule
    (the reference never schedules the prompt). max_steps, when set, fixes the run's length in optimizer
    steps (epochs then only count passes over the data).

    loss_tokens: "answer" (the target only: answer or caption) or "all" (every non-pad token, as the
    reference). loss_reduction: "token_mean" or "sample_sum" (per-sample sum averaged over the batch, as
    the reference) times lm_loss_weight (0.1 in the reference).

    fused_adamw: AdamW's fused kernel (one launch for every trainable tensor): "auto" = fused when the
    trainable weights are on a GPU, the default implementation elsewhere (so CPU runs keep their exact numbers);
    true or false to choose.

    augment: training-time media augmentation (random crops, flips, RandAugment, random frames, SpecAugment);
    off, training sees the deterministic test-time preprocessing. feature_cache: encode every media item
    once with the test-time preprocessing and train/evaluate from the stored encoder outputs (implies no
    augmentation; see docs/feature_cache.md).

    log_with: an experiment tracker through accelerate (none, tensorboard, wandb), beside train_log.jsonl;
    tracker_project: its project name (empty: the output folder's name; see training/trackers.py).

    log_every: steps between loss records; epoch_end_every: epochs between the epoch-end validation and save of
    `checkpoints/last` (the end of training always does both); "auto" sizes both to the run, so a tiny data set
    (one step an epoch) neither validates nor rewrites `last` at every step (training/step_schedule.py).
    checkpoint_every_steps: also save `last` every n steps."""

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 2e-4
    prompt_lr: float = 1e-3
    lm_lr: float | None = None
    weight_decay: float = 0.02
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    loss_tokens: str = "answer"
    loss_reduction: str = "token_mean"
    lm_loss_weight: float = 1.0
    max_text_len: int = 64
    num_workers: int = 2
    augment: bool = True
    feature_cache: bool = False
    feature_cache_dir: str = ".cache/features"
    log_every: int | str = "auto"
    epoch_end_every: int | str = "auto"
    checkpoint_every_steps: int | None = None
    log_with: str = "none"
    tracker_project: str = ""
    fused_adamw: str | bool = "auto"

    def __post_init__(self) -> None:
        if self.fused_adamw not in FUSED_ADAMW:
            raise ConfigError(f"train.fused_adamw must be one of auto, true, false; got {self.fused_adamw!r}")
        check_interval("train.log_every", self.log_every)
        check_interval("train.epoch_end_every", self.epoch_end_every)


BEAM_SCORE_LENGTHS = ("generated", "sequence")


@dataclass
class EvalConfig:
    """padding_side: of the question batch. "left" (default): an answer does not depend on the other questions
    of its batch. "right": the reference's padding='longest': a shorter question's first answer token is
    predicted at the batch's last column, one of its pad positions, and in `epalm` mode the visual slot also
    attends to the pads, so its answer depends on the longest question of its batch (as published).

    beam_score_length: what a finished beam's log-probability is divided by: "generated" (the generated
    tokens, eos included: transformers' beam search) or "sequence" (question and generated tokens, eos not
    counted: transformers 4.20's, which the reference's published numbers used; models/legacy_beam_search.py).

    do_sample, temperature, top_p, top_k, repetition_penalty: sampling instead of greedy / beam search, through
    transformers' GenerationConfig (models/sampling.py); evaluation seeds it with the run's `seed`. Also the
    defaults of `main.py chat`, `predict`, `serve` and the Python API."""

    batch_size: int = 16
    num_beams: int = 3
    max_length: int = 30
    every_epoch: bool = True
    html_samples: int = 48
    padding_side: str = "left"
    beam_score_length: str = "generated"
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.padding_side not in PADDING_SIDES:
            raise ConfigError(f"padding_side {self.padding_side!r} is not one of {PADDING_SIDES}")
        if self.beam_score_length not in BEAM_SCORE_LENGTHS:
            raise ConfigError(f"beam_score_length {self.beam_score_length!r} is not one of {BEAM_SCORE_LENGTHS}")
        self.sampling.check("eval.")

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.do_sample, self.temperature, self.top_p, self.top_k, self.repetition_penalty)


@dataclass
class MixtureEntry:
    """One task of a joint run (`mixture`): its data, a task section as `task`, and its sampling weight."""

    task: TaskConfig = field(default_factory=TaskConfig)
    weight: float = 1.0


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Joint training: {name: {task: {...}, weight: w}}; when set, the runs trains on these tasks (batches of
    # one task each, drawn by weight) and evaluates each, and the `task` section is not used (training/mixture.py).
    mixture: dict[str, MixtureEntry] = field(default_factory=dict)
    output_dir: str = "outputs/run"
    seed: int = 42
    mixed_precision: str = "auto"
    checkpoint: str | None = None
    # A two-stage start: the bridge (connectors, soft prompt) of an earlier run or checkpoint folder, whatever its
    # LM trained as (frozen -> LoRA, frozen -> full); the rest starts fresh (models/checkpoint.py:load_bridge_weights).
    init_from: str | None = None
    evaluate: bool = False
    resume: bool = False
    save_best: bool = False

    def __post_init__(self) -> None:
        if self.init_from and self.checkpoint:
            raise ConfigError("--init_from starts a new stage from an earlier run's bridge, --checkpoint loads a whole "
                              "trained model: give one of them")
        if self.train.lm_lr is not None and self.model.lm.train == "frozen":
            raise ConfigError("train.lm_lr is set but the LM is frozen (model.lm.train: frozen): set model.lm.train "
                              "to lora or full, or drop train.lm_lr")


# The flags eP-ALM users know, and where each lands in the config.
FLAGS = {
    "output_dir": "output_dir",
    "data_dir": "task.data_dir",
    "text_model": "model.lm.name",
    "vision_model": "model.encoders.<main>.name",  # the first encoder's (image when the configs name none)
    "checkpoint": "checkpoint",
    "init_from": "init_from",
    "seed": "seed",
}
SWITCHES = {"evaluate": "evaluate", "resume": "resume", "save_best": "save_best"}
FLAG_HELP = {  # flag: (metavar, help); one line each in --help
    "output_dir": ("DIR", "run folder: logs, checkpoints, predictions, metrics"),
    "data_dir": ("DIR", "dataset root, laid out as docs/datasets.md says"),
    "text_model": ("NAME", "frozen LM: hub id (facebook/opt-2.7b) or folder"),
    "vision_model": ("NAME", "frozen encoder: timm name, hub id or folder"),
    "checkpoint": ("PATH", "initial weights: a run's best/ or an eP-ALM .pth"),
    "init_from": ("RUN", "stage 2: the bridge of an earlier run (any model.lm.train)"),
    "seed": ("N", "seed of shuffling, sampling, augmentation (42)"),
    "evaluate": (None, "only evaluate, on the test split (val if none)"),
    "resume": (None, "continue from <output_dir>/checkpoints/last"),
    "save_best": (None, "keep the best validation checkpoint, test with it"),
}
MAIN_EXAMPLES = """examples:
  # train on VQA v2 (data layout: docs/datasets.md), keep the best checkpoint
  python main.py --config configs/image/epalm_vqa.yaml --data_dir data \\
      --output_dir outputs/vqa --save_best
  # evaluate that run's best checkpoint on the test split
  python main.py --config configs/image/epalm_vqa.yaml --data_dir data \\
      --output_dir outputs/vqa_test --evaluate --checkpoint outputs/vqa/best
  # evaluate a released eP-ALM .pth, in the reference's injection mode
  python main.py --config configs/image/epalm_pt_l_vqa.yaml --data_dir data \\
      --output_dir outputs/pt_l --evaluate --checkpoint ePALM_pt_L_vqa.pth \\
      --set model.injection_mode=epalm
  # two stages (LLaVA, multi_token): the projector first, then LoRA on the LM from it
  python main.py --config configs/recipes/multi_token_stage2.yaml --data_dir data \\
      --output_dir outputs/stage2 --init_from outputs/stage1
  # on N GPUs: accelerate launch --multi_gpu --num_processes N main.py ...
  # run_scripts/<modality>/<task>/*.sh: these per task (docs/training.md)"""


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("main.py", "Train eP-ALM on one task (validate each epoch, then test), or only evaluate "
                            "it.\nDefaults < --config files < flags < --set; every key: "
                            "docs/configuration.md.", MAIN_EXAMPLES)
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config file; repeat to layer several")
    for flag in FLAGS:
        metavar, text = FLAG_HELP[flag]
        parser.add_argument(f"--{flag}", default=None, metavar=metavar, help=text)
    for switch in SWITCHES:
        parser.add_argument(f"--{switch}", action="store_true", default=None, help=FLAG_HELP[switch][1])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config key, e.g. train.lr=1e-3 (repeatable)")
    add_debug_flag(parser)
    return parser


def existing_yaml(folder: Path) -> list[str]:
    return [str(p) for p in folder.glob("*.yaml")] if folder.is_dir() else []


def load_yaml(path: str | Path, path_keys: tuple[str, ...] = INPUT_PATH_KEYS) -> dict[str, Any]:
    """A config file with its includes merged under it; the inputs under `path_keys` read relative to the file
    that names them (training/config_paths.py)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}{did_you_mean(str(path), existing_yaml(path.parent))}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    resolve_config_paths(values, path, path_keys)  # the inputs it names, relative to itself
    include = values.pop("include", None)
    if include:  # a config may build on others, relative to itself
        base: dict[str, Any] = {}
        for name in [include] if isinstance(include, str) else include:
            base = merge(base, load_yaml(path.parent / name, path_keys))
        values = merge(base, values)
    return values


def _translate_legacy(values: dict[str, Any], source: str) -> None:
    """Old `model.encoder` / `model.extra_encoders` keys read as `model.encoders` (models/config.py)."""
    if isinstance(values.get("model"), dict):
        values["model"] = translate_legacy_encoders(values["model"], source)


def _main_encoder(values: dict[str, Any]) -> str:
    encoders = (values.get("model") or {}).get("encoders") or {}
    return next(iter(encoders), "image")


def resolve_config(argv: list[str] | None = None) -> RunConfig:
    args = argument_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for path in args.config:  # load_yaml's errors name the file (an included one too)
        values = merge(values, load_yaml(path))
    _translate_legacy(values, ", ".join(args.config) or "config")
    for flag, dotted in {**FLAGS, **SWITCHES}.items():
        value = getattr(args, flag)
        if value is not None:
            set_dotted(values, dotted.replace("<main>", _main_encoder(values)), value)
    for text in args.set:
        set_dotted(values, *parse_override(text))
    _translate_legacy(values, "--set")
    return from_dict(RunConfig, values)


def dump_config(cfg: RunConfig, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
