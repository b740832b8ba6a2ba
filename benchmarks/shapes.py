"""The model shapes the benchmark measures, each with its workload sizes, reference numbers and targets.

- `ref-small`: fixed, comparable with the reference implementation: OPT-125m architecture + ViT-B/16 at
  224 (random weights), batch 4, text length 20, K = 6 CLS tokens into LM layers 6..11, 10 plain
  prompt vectors; a 3-beam generation of 20 new tokens.
- `demo-image`: the demo's image VQA model (configs/demo/image_vqa.yaml with random weights when that
  file and its LM folder exist, else the demo notes' shape: OPT hidden 128 x 4 layers + ViT 48 px,
  patch 8, dim 128, depth 4), batch 64; where the feature-cache speed-up is judged.
- `tiny`: a few-millisecond model for the tests.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

from models.config import ModelConfig
from models.encoders.config import EncoderConfig
from models.language_model import LanguageModelConfig
from models.param_count import architecture_path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEMO_IMAGE_CONFIG = REPO / "configs" / "demo" / "image_vqa.yaml"


@dataclass(frozen=True)
class Target:
    """A ratio in the results (`ratios[key]`) that must reach `minimum`."""

    key: str
    minimum: float
    description: str


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
    reference: dict[str, float] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    pipeline: bool = False


KV_TARGET = Target("kv_cache_generation_speedup", 3.0, "KV-cached generation vs full recomputation (x)")


def ref_small() -> BenchShape:
    model = ModelConfig(
        lm=LanguageModelConfig(name=architecture_path("opt-125m"), random_init=True),
        encoder=EncoderConfig(type="timm_vit", name="vit_base_patch16_224", pretrained=False),
        injected_hidden_states=6, start_layer_idx=6, end_layer_idx=12, prompt_len=10, mlp=False,
    )
    return BenchShape(
        "ref-small", "OPT-125m + ViT-B/16@224, random init, K=6 into layers 6..11, 10 prompt vectors",
        model, batch_size=4, text_len=20, new_tokens=20, compare_tokens=30, num_beams=3,
        # The reference implementation on this machine kind (2 threads, fp32), medians of 5 runs.
        reference={"train_step_s": 2.0, "generate_s": 13.6},
        targets=(
            Target("train_speedup_vs_reference", 3.0, "training step vs the reference's 2.0 s, no feature cache (x)"),
            Target("generate_speedup_vs_reference", 5.0, "20-token 3-beam generation vs the reference's 13.6 s (x)"),
            KV_TARGET,
        ),
    )


def _demo_notes_model() -> ModelConfig:
    return ModelConfig(
        lm=LanguageModelConfig(name="opt", random_init=True, config_overrides=dict(
            hidden_size=128, ffn_dim=512, num_hidden_layers=4, num_attention_heads=4, word_embed_proj_dim=128,
            vocab_size=512, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=1)),
        encoder=EncoderConfig(type="timm_vit", name="vit_tiny_patch16_224", pretrained=False, model_kwargs=dict(
            img_size=48, patch_size=8, embed_dim=128, depth=4, num_heads=4)),
        injected_hidden_states=2, start_layer_idx=0, end_layer_idx=4, prompt_len=8,
    )


def _demo_config_model() -> ModelConfig | None:
    """The demo config's model with random weights, or None when the config or its LM folder is absent."""
    if not DEMO_IMAGE_CONFIG.is_file():
        return None
    from training.run_config import resolve_config

    model = copy.deepcopy(resolve_config(["--config", str(DEMO_IMAGE_CONFIG)]).model)
    lm_path = REPO / model.lm.name if not Path(model.lm.name).is_absolute() else Path(model.lm.name)
    if not model.lm.random_init:
        if not (lm_path / "config.json").is_file():
            logger.warning("%s: LM folder %s not built; using the demo notes' shape", DEMO_IMAGE_CONFIG, lm_path)
            return None
        model.lm.name, model.lm.random_init = str(lm_path), True
    model.encoder.pretrained, model.encoder.checkpoint = False, None  # the same architecture, random weights
    return model


def demo_image() -> BenchShape:
    model = _demo_config_model()
    source = f"{DEMO_IMAGE_CONFIG.relative_to(REPO)} (random weights)" if model else "the demo notes' shape"
    return BenchShape(
        "demo-image", f"demo image VQA model: {source}",
        model or _demo_notes_model(), batch_size=64, text_len=16, new_tokens=20, compare_tokens=30, num_beams=3,
        targets=(Target("feature_cache_train_speedup", 5.0, "feature-cache training samples/s vs on-the-fly (x)"),
                 KV_TARGET),
        pipeline=True,
    )


def tiny() -> BenchShape:
    model = ModelConfig(
        lm=LanguageModelConfig(name="opt", random_init=True, config_overrides=dict(
            hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
            vocab_size=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=1)),
        encoder=EncoderConfig(type="timm_vit", name="vit_tiny_patch16_224", pretrained=False, model_kwargs=dict(
            img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)),
        injected_hidden_states=2, start_layer_idx=0, end_layer_idx=2, prompt_len=2,
    )
    return BenchShape("tiny", "tiny OPT + tiny ViT (tests)", model, batch_size=2, text_len=6, new_tokens=4,
                      compare_tokens=5, num_beams=2, pipeline=True)


SHAPES = {"ref-small": ref_small, "demo-image": demo_image, "tiny": tiny}


def get_shape(name: str) -> BenchShape:
    if name not in SHAPES:
        raise ValueError(f"unknown benchmark shape '{name}'; known: {', '.join(SHAPES)}")
    return SHAPES[name]()
