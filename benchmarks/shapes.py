"""The model shapes the benchmark measures, each with its workload sizes, reference numbers and targets.

- `ref-small`: fixed, comparable with the reference implementation: OPT-125m architecture + ViT-B/16 at
  224 (random weights), batch 4, text length 20, K = 6 CLS tokens into LM layers 6..11, 10 plain
  prompt vectors; a 3-beam generation of 20 new tokens.
- `demo-image`: the demo's image VQA model (configs/demo/image_vqa.yaml with random weights when that
  file and its LM folder exist, else the demo notes' shape: OPT hidden 128 x 4 layers + ViT 48 px,
  patch 8, dim 128, depth 4), batch 64; where the feature-cache speed-up is judged.
- `opt-2.7b`, `opt-6.7b-pt-l`: the paper's eP-ALM and eP-ALM_pt-L recipes (configs/base/epalm.yaml,
  epalm_pt_l.yaml) with random weights of the full-size architectures, at the configs' batch sizes; for
  the GPU targets (model FLOPs utilisation of OPT-2.7B + ViT-B/16, peak memory of OPT-6.7B pt-L).
- `tiny`: a few-millisecond model for the tests.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

from epalm.common.errors import ConfigError, did_you_mean
from epalm.models.config import ModelConfig
from epalm.models.encoders.config import EncoderConfig
from epalm.models.language_models.frozen_lm import LanguageModelConfig
from epalm.models.param_count import architecture_path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEMO_IMAGE_CONFIG = REPO / "configs" / "demo" / "image_vqa.yaml"


@dataclass(frozen=True)
class Target:
    """A value of the results that must reach `minimum` or stay within `maximum`: a ratio between modes
    (`key` as in `ratios`) or one field of one mode (`key` = "mode.field", e.g. "train_encode.mfu").
    `device`: judged only on that device type (GPU memory is not the CPU's resident set)."""

    key: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    device: str | None = None

    def bound(self) -> str:
        return f">= {self.minimum:g}" if self.minimum is not None else f"<= {self.maximum:g}"

    def met_by(self, value: float) -> bool:
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)


@dataclass(frozen=True)
class BenchShape:
    """new_tokens: the headline generation (compared with the reference); compare_tokens: the length of
    the KV-cache vs recomputation and causal vs epalm generations. pipeline: also time training through
    the real data pipeline (decode + augment + encode vs reading the feature cache)."""

    name: str
    description: str
    model: ModelConfig
    batch_size: int
    text_len: int
    new_tokens: int
    compare_tokens: int
    num_beams: int
    # The reference implementation's seconds per precision ("float32", "bfloat16"): `{dtype: {key: seconds}}`.
    # A ratio to the reference is only computed at a precision it was measured at (report.REFERENCE_RATIOS).
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    pipeline: bool = False
    modes: tuple[str, ...] | None = None  # measured unless --modes says otherwise (None: every mode)


KV_TARGET = Target("kv_cache_generation_speedup", "KV-cached generation vs full recomputation (x)", minimum=3.0)


def ref_small() -> BenchShape:
    model = ModelConfig(
        lm=LanguageModelConfig(name=architecture_path("opt-125m"), random_init=True),
        encoders={"image": EncoderConfig(type="timm_vit", name="vit_base_patch16_224", pretrained=False)},
        injected_hidden_states=6, start_layer_idx=6, end_layer_idx=12, prompt_len=10, mlp=False,
    )
    return BenchShape(
        "ref-small", "OPT-125m + ViT-B/16@224, random init, K=6 into layers 6..11, 10 prompt vectors",
        model, batch_size=4, text_len=20, new_tokens=20, compare_tokens=30, num_beams=3,
        # The reference implementation (mshukor/eP-ALM @9ecfeb9) measured side by side with this project on one
        # host, 2026-12-04, AMD EPYC, 2 threads, medians of 5 (docs/benchmarks.md, "Against the reference"):
        # fp32 (its own precision), the mean of its two runs (step 1.48 and 1.28 s; 20 new tokens 15.67 and
        # 16.49 s); bf16 as the reference does it, `model.to(bfloat16)` (trainables and AdamW in bf16 too).
        reference={"float32": {"train_step_s": 1.38, "generate_s": 16.08},
                   "bfloat16": {"train_step_s": 0.63, "generate_s": 7.40}},
        targets=(
            Target("train_speedup_vs_reference", "training step vs the reference at the same precision, "
                   "no feature cache (x)", minimum=3.0),
            Target("generate_speedup_vs_reference", "20-token 3-beam generation vs the reference at the same "
                   "precision (x)", minimum=5.0),
            KV_TARGET,
        ),
    )


def _demo_notes_model() -> ModelConfig:
    return ModelConfig(
        lm=LanguageModelConfig(name="opt", random_init=True, config_overrides=dict(
            hidden_size=128, ffn_dim=512, num_hidden_layers=4, num_attention_heads=4, word_embed_proj_dim=128,
            vocab_size=512, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=1)),
        encoders=image_encoder(type="timm_vit", name="vit_tiny_patch16_224", pretrained=False, model_kwargs=dict(
            img_size=48, patch_size=8, embed_dim=128, depth=4, num_heads=4)),
        injected_hidden_states=2, start_layer_idx=0, end_layer_idx=4, prompt_len=8,
    )


def image_encoder(**section) -> dict[str, EncoderConfig]:
    return {"image": EncoderConfig(**section)}


def _demo_config_model() -> ModelConfig | None:
    """The demo config's model with random weights, or None when the config or its LM folder is absent."""
    if not DEMO_IMAGE_CONFIG.is_file():
        return None
    from epalm.training.run_config import resolve_config

    model = copy.deepcopy(resolve_config(["--config", str(DEMO_IMAGE_CONFIG)]).model)
    lm_path = REPO / model.lm.name if not Path(model.lm.name).is_absolute() else Path(model.lm.name)
    if not model.lm.random_init:
        if not (lm_path / "config.json").is_file():
            logger.warning("%s: LM folder %s not built; using the demo notes' shape", DEMO_IMAGE_CONFIG, lm_path)
            return None
        model.lm.name, model.lm.random_init = str(lm_path), True
    for encoder in model.encoders.values():  # the same architecture, random weights
        encoder.pretrained, encoder.checkpoint = False, None
    return model


def demo_image() -> BenchShape:
    model = _demo_config_model()
    source = f"{DEMO_IMAGE_CONFIG.relative_to(REPO)} (random weights)" if model else "the demo notes' shape"
    return BenchShape(
        "demo-image", f"demo image VQA model: {source}",
        model or _demo_notes_model(), batch_size=64, text_len=16, new_tokens=20, compare_tokens=30, num_beams=3,
        targets=(Target("feature_cache_train_speedup", "feature-cache training samples/s vs on-the-fly (x)",
                        minimum=5.0),
                 KV_TARGET),
        pipeline=True,
    )


def _paper_recipe(config: str, lm: str) -> tuple[ModelConfig, int]:
    """A paper config's model with random weights of the named LM architecture, and its batch size."""
    from epalm.training.run_config import resolve_config

    cfg = resolve_config(["--config", str(REPO / "configs" / "base" / config)])
    model = copy.deepcopy(cfg.model)
    model.lm.name, model.lm.random_init = architecture_path(lm), True
    for encoder in model.encoders.values():
        encoder.pretrained = False
    return model, cfg.train.batch_size


# 20 GB as the issue states it, in the MiB that the results report.
GPU_MEMORY_LIMIT_MIB = 20e9 / 2**20


def opt_2_7b() -> BenchShape:
    model, batch = _paper_recipe("epalm.yaml", "opt-2.7b")
    return BenchShape(
        "opt-2.7b", "eP-ALM (configs/base/epalm.yaml): OPT-2.7B + ViT-B/16, random init, the config's batch",
        model, batch_size=batch, text_len=20, new_tokens=20, compare_tokens=30, num_beams=3,
        targets=(Target("train_encode.mfu", "training step with the encoder: model FLOPs utilisation",
                        minimum=0.40, device="cuda"),
                 # The H200 of issue 9 timed the cached step slower (0.87x): on a GPU it must be faster.
                 Target("feature_cache_train_speedup", "train_cached faster than train_encode (x)",
                        minimum=1.0, device="cuda")),
        modes=("encode", "train_encode", "train_cached", "generate"),
    )


def opt_6_7b_pt_l() -> BenchShape:
    model, batch = _paper_recipe("epalm_pt_l.yaml", "opt-6.7b")
    return BenchShape(
        "opt-6.7b-pt-l", "eP-ALM_pt-L (configs/base/epalm_pt_l.yaml): OPT-6.7B + ViT-L/16, random init, batch 2",
        model, batch_size=batch, text_len=20, new_tokens=20, compare_tokens=30, num_beams=3,
        targets=(Target("train_encode.peak_memory_mb", "training step: peak GPU memory (MiB; 20 GB)",
                        maximum=GPU_MEMORY_LIMIT_MIB, device="cuda"),),
        modes=("train_encode", "train_cached"),
    )


def tiny() -> BenchShape:
    model = ModelConfig(
        lm=LanguageModelConfig(name="opt", random_init=True, config_overrides=dict(
            hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
            vocab_size=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=1)),
        encoders=image_encoder(type="timm_vit", name="vit_tiny_patch16_224", pretrained=False, model_kwargs=dict(
            img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)),
        injected_hidden_states=2, start_layer_idx=0, end_layer_idx=2, prompt_len=2,
    )
    return BenchShape("tiny", "tiny OPT + tiny ViT (tests)", model, batch_size=2, text_len=6, new_tokens=4,
                      compare_tokens=5, num_beams=2, pipeline=True)


SHAPES = {"ref-small": ref_small, "demo-image": demo_image, "opt-2.7b": opt_2_7b, "opt-6.7b-pt-l": opt_6_7b_pt_l,
          "tiny": tiny}


def get_shape(name: str) -> BenchShape:
    if name not in SHAPES:
        raise ConfigError(f"unknown benchmark shape '{name}'{did_you_mean(name, SHAPES)}; known: {', '.join(SHAPES)}")
    return SHAPES[name]()
