"""The few-shot study's configuration (configs/fewshot/*.yaml): typed sections, an unknown key is an error.

Every key is documented in docs/configuration.md ("Few-shot study") and docs/fewshot.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from epalm.common.config_io import from_dict, merge, parse_override, set_dotted, to_dict
from epalm.common.errors import ConfigError, check_choice
from epalm.dataset.chat_template import TEXT_FORMATS
from epalm.dataset.collate import DEFAULT_CAPTION_PROMPT
from epalm.models.config import translate_legacy_encoders
from epalm.models.encoders.config import EncoderConfig
from epalm.training.run_config import load_yaml

METHODS = ("hypernetwork", "hypernetwork_finetuned", "scratch", "pretrained_finetuned", "lora", "epalm_injection")


@dataclass
class ModalitySource:
    """One modality: its data (a task reader over `data_dir`, built first by a synthetic builder when `build`
    names one) and its frozen encoder (`encoder_config`: a YAML file whose `model.encoders` section, of one encoder, builds it;
    or `encoder`: that encoder's section inline).

    build: "" (the data is already in `data_dir`) or a synthetic data set: image, video, audio, sensor;
    build_options: that builder's arguments (n_train, n_val, n_test, seed ...).
    data_dir: "" = `<out_dir>/data/<modality name>`. max_items: at most this many items of each split."""

    reader: str = ""
    data_dir: str = ""
    build: str = ""
    build_options: dict[str, Any] = field(default_factory=dict)
    encoder_config: str = ""
    encoder: EncoderConfig | None = None
    train_split: str = "train"
    val_split: str = ""
    test_split: str = ""
    max_items: int | None = None

    def __post_init__(self) -> None:
        if not self.reader:
            raise ConfigError("a modality needs `reader` (a task reader of dataset/tasks)")
        if bool(self.encoder_config) == (self.encoder is not None):
            raise ConfigError("a modality needs exactly one of `encoder_config` (a YAML file with model.encoders) "
                              "and `encoder` (the section inline)")

    def encoder_section(self) -> EncoderConfig:
        if self.encoder is not None:
            return self.encoder
        model = translate_legacy_encoders(load_yaml(self.encoder_config).get("model") or {}, self.encoder_config)
        encoders = model.get("encoders")
        if not isinstance(encoders, dict) or len(encoders) != 1:
            raise ConfigError(f"{self.encoder_config}: expected a model.encoders section of one encoder, found "
                              f"{sorted(encoders) if isinstance(encoders, dict) else 'none'}")
        (modality, section), = encoders.items()
        return from_dict(EncoderConfig, section, f"{self.encoder_config}: model.encoders.{modality}")


@dataclass
class ProjectorConfig:
    """width: the common width D; hidden: the projector's hidden width; tokens: N LM input embeddings per
    instance; rank: r of the low-rank adapter (and of the hypernetwork's caption codes)."""

    width: int = 128
    hidden: int = 256
    tokens: int = 4
    rank: int = 32


@dataclass
class PretrainConfig:
    """Stage 1: the shared projector on the seen modalities (and text), no adapter, no isometry."""

    steps: int = 800
    batch_size: int = 32
    lr: float = 1.0e-3
    warmup_steps: int = 50


@dataclass
class HypernetworkConfig:
    """Stage 2: the hypernetwork (and the projector, from stage 1) on episodes of the seen modalities.

    Each step draws `episodes` episodes: a seen modality, a random isometry (when `isometry`; a permutation too
    when `permute`), k support samples (k log-uniform in [shots_min, shots_max]) and `queries` other samples
    whose captions are the loss. pooling: mean | attention (the set summary); solver: ridge | covariance."""

    steps: int = 3000
    episodes: int = 2
    queries: int = 16
    shots_min: int = 8
    shots_max: int = 512
    isometry: bool = True
    permute: bool = False
    pooling: str = "mean"
    solver: str = "ridge"
    summary_width: int = 64
    lr: float = 1.0e-3
    projector_lr: float = 3.0e-4
    warmup_steps: int = 50


@dataclass
class EpalmBaselineConfig:
    """The eP-ALM layer-injection baseline, from scratch on the k samples: the demo's recipe (K encoder blocks,
    a linear connection per block, injected into LM layers [start, end), a soft prompt)."""

    injected_hidden_states: int = 2
    start_layer_idx: int = 0
    end_layer_idx: int = 4
    prompt_len: int = 8


@dataclass
class StudyConfig:
    """shots: the k values; seeds: one draw of the k samples (and initialisation) each; steps, batch_size: the
    training budget of every method that trains (the same for all); lr: method -> learning rate (chosen on the
    validation split); eval_split: "test" (the report) or "val" (design choices); eval_items: at most this many
    items of it; workers: processes running the runs in parallel; reference_steps: the full-data and blind
    reference runs' steps (0: none)."""

    shots: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 256, 512])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    steps: int = 200
    batch_size: int = 16
    lr: dict[str, float] = field(default_factory=lambda: {
        "hypernetwork_finetuned": 1e-4, "scratch": 1e-1, "pretrained_finetuned": 3e-2, "lora": 3e-3,
        "epalm_injection": 3e-2})  # chosen by `tune` on the validation split (docs/fewshot.md)
    eval_split: str = "test"
    eval_items: int | None = 300
    max_new_tokens: int = 24
    workers: int = 2
    reference_steps: int = 600

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ConfigError(f"study.methods: unknown {unknown}; known: {list(METHODS)}")
        missing = sorted(m for m in self.methods if m != "hypernetwork" and m not in self.lr)
        if missing:
            raise ConfigError(f"study.lr has no learning rate for {missing}")
        if self.eval_split not in ("test", "val"):
            raise ConfigError(f"study.eval_split must be test or val, got {self.eval_split!r}")
        if not self.shots or min(self.shots) < 1 or not self.seeds:
            raise ConfigError("study.shots must be positive numbers and study.seeds not empty")


@dataclass
class TuneConfig:
    """`python -m epalm.studies.fewshot tune`: each training method's lr chosen on the validation split, over `lrs`
    at every k of `shots` (seed `seed`, `eval_items` validation items, the study's steps and batch size)."""

    shots: list[int] = field(default_factory=lambda: [32, 256])
    lrs: list[float] = field(default_factory=lambda: [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    seed: int = 0
    eval_items: int | None = 150


@dataclass
class FewShotConfig:
    """lm: the frozen LM (a transformers folder or hub id); new: the modality integrated from k samples; seen:
    the modalities the projector and hypernetwork learn from; text: also learn from the seen captions' own
    embeddings (a paraphrase task); feature_blocks: encoder blocks cached (the last is what the projector reads,
    the eP-ALM baseline reads `epalm.injected_hidden_states` of them). text_format: "reference" (a caption is
    `BOS caption</s>`) or "chat" (an instruct LM, as DMI's: a one-turn conversation through the tokenizer's chat
    template, the user turn `caption_prompt`, the media tokens before it)."""

    out_dir: str = "outputs/fewshot"
    lm: str = "models/demo_weights/opt-demo"
    seed: int = 0
    new: dict[str, ModalitySource] = field(default_factory=dict)
    seen: dict[str, ModalitySource] = field(default_factory=dict)
    text: bool = True
    feature_blocks: int = 2
    text_format: str = "reference"
    caption_prompt: str = DEFAULT_CAPTION_PROMPT
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    hypernetwork: HypernetworkConfig = field(default_factory=HypernetworkConfig)
    epalm: EpalmBaselineConfig = field(default_factory=EpalmBaselineConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def __post_init__(self) -> None:
        check_choice("text_format", self.text_format, TEXT_FORMATS)
        if len(self.new) != 1:
            raise ConfigError(f"`new` must name exactly one modality, got {sorted(self.new)}")
        if not self.seen:
            raise ConfigError("`seen` must name at least one modality")
        overlap = set(self.new) & set(self.seen)
        if overlap:
            raise ConfigError(f"modality {sorted(overlap)} is both new and seen")

    def text_settings(self) -> dict[str, str]:
        """What changes the caption text (for the stages' fingerprints: empty for the reference format, so the
        stages trained before the key stay valid)."""
        if self.text_format == "reference":
            return {}
        return {"text_format": self.text_format, "caption_prompt": self.caption_prompt}

    @property
    def new_name(self) -> str:
        return next(iter(self.new))

    @property
    def new_source(self) -> ModalitySource:
        return self.new[self.new_name]


# Inputs a study config names, read relative to that file as the run configs' are (training/config_paths.py);
# `out_dir` is an output: a relative one is written under the current folder.
PATH_KEYS = tuple(f"{group}.*.{key}" for group in ("new", "seen")
                  for key in ("data_dir", "encoder_config", "encoder.name", "encoder.checkpoint")) + ("lm",)


def load_config(paths: list[str | Path], overrides: list[str] = ()) -> FewShotConfig:
    """YAML files (later ones win; `include:` as in the run configs; the inputs they name relative to themselves),
    then `key.path=value` overrides (the user's paths, read from the current folder)."""
    values: dict[str, Any] = {}
    for path in paths:
        values = merge(values, load_yaml(path, PATH_KEYS))
    for text in overrides:
        set_dotted(values, *parse_override(text))
    return from_dict(FewShotConfig, values)


def config_dict(cfg: FewShotConfig) -> dict[str, Any]:
    return to_dict(cfg)
