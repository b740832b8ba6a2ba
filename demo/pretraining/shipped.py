"""Where the demo's pretrained models live in the repo, and the configs that load them through the project's loaders."""
from __future__ import annotations

from pathlib import Path

from epalm.demo.pretraining.folders import read_json
from epalm.demo.pretraining.settings import ENCODER_FILE, LM_DIR, VIT_DIR, VIT_WEIGHTS_FILE
from epalm.models.encoders import EncoderConfig
from epalm.models.language_models.frozen_lm import LanguageModelConfig

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "models" / "demo_weights"


def lm_config(lm_dir: str | Path) -> LanguageModelConfig:
    """The OPT saved in `lm_dir` (its tokenizer sits beside the weights: `load_tokenizer(config.name)`)."""
    return LanguageModelConfig(name=str(lm_dir))


def encoder_config(vit_dir: str | Path) -> EncoderConfig:
    """The ViT saved in `vit_dir`: the fields of its `encoder.json` plus the checkpoint beside it."""
    vit_dir = Path(vit_dir)
    return EncoderConfig.from_dict({**read_json(vit_dir / ENCODER_FILE), "checkpoint": str(vit_dir / VIT_WEIGHTS_FILE)})


def demo_lm_config(out_dir: str | Path = DEFAULT_OUT) -> LanguageModelConfig:
    return lm_config(Path(out_dir) / LM_DIR)


def demo_encoder_config(out_dir: str | Path = DEFAULT_OUT) -> EncoderConfig:
    return encoder_config(Path(out_dir) / VIT_DIR)
