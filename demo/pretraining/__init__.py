"""The embedded offline demo's unimodal pretrained models, built locally and deterministically from a seed.

    python -m epalm.demo.pretraining [--only tokenizer lm vit timesformer ast sensor] [--seed N] [--out models/demo_weights] [--force]

tokenizer: BPE over the synthetic worlds' text corpus; lm: a small OPT pretrained on that text only (it learns
to read its context); vit: a timm ViT pretrained on image-world attribute classification; timesformer, ast: a
transformers TimeSformer and AST pretrained on video- and audio-world attribute classification; sensor: a 1-D
transformer pretrained on sensor-world attribute classification (the few-shot study's new modality). See docs/demo_models.md.
"""
from epalm.demo.pretraining.build import COMPONENTS, DemoModels, build_lm, build_tokenizer, build_vit, ensure_demo_models
from epalm.demo.pretraining.settings import LMSettings, TokenizerSettings, ViTSettings
from epalm.demo.pretraining.shipped import DEFAULT_OUT, demo_encoder_config, demo_lm_config, encoder_config, lm_config

__all__ = [
    "COMPONENTS", "DEFAULT_OUT", "DemoModels", "LMSettings", "TokenizerSettings", "ViTSettings", "build_lm",
    "build_tokenizer", "build_vit", "demo_encoder_config", "demo_lm_config", "encoder_config", "ensure_demo_models",
    "lm_config",
]
