"""The recipes of the demo's unimodal pretraining: sizes, step counts and learning rates (fixed, never wall-clock)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOKENIZER_DIR = "tokenizer"
LM_DIR = "opt-demo"
VIT_DIR = "vit-demo"
REPORT_FILE = "pretraining_report.json"
ENCODER_FILE = "encoder.json"
VIT_WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class TokenizerSettings:
    """BPE over the text corpus of every registered world; `vocab_size` is a cap (merges stop when words are whole)."""

    n_documents: int = 20_000
    vocab_size: int = 1024


@dataclass(frozen=True)
class LMSettings:
    """A small OPT pretrained on the text corpus only; every document is one sequence, seen once.

    Choices measured on this task (docs/demo_models.md): 16 narrow heads and untied input/output embeddings
    learn to copy from the context far sooner than 4 heads or tied embeddings (tied, the output rows of
    interchangeable words such as the colours collapse together while nothing predicts them), as do a corpus
    weighted towards documents whose answers are in the context and extra loss weight on the answers.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 16
    ffn_dim: int = 512
    max_positions: int = 128
    tie_embeddings: bool = False
    corpus_mix: dict[str, float] = field(default_factory=lambda: {
        "caption": 0.1, "caption_qa": 0.6, "paraphrase": 0.1, "keywords_qa": 0.2})
    answer_loss_weight: float = 5.0  # answer tokens weigh this much more than the others in the loss
    steps: int = 3000
    batch_size: int = 32
    length_buckets: int = 20  # batches whose documents are sorted by length together (less padding)
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    # Held-out evaluation: fresh scenes per world, every candidate question of each, greedy decoding.
    eval_scenes_per_world: int = 150
    eval_samples: int = 300  # captions sampled from BOS for the well-formedness check


@dataclass(frozen=True)
class ViTSettings:
    """A timm ViT trained from scratch to classify the image world's scene attributes from its final CLS token."""

    name: str = "vit_tiny_patch16_224"  # only the architecture family: model_kwargs resize it
    model_kwargs: dict[str, Any] = field(default_factory=lambda: dict(
        img_size=48, patch_size=8, embed_dim=128, depth=4, num_heads=4))
    n_train_images: int = 24_000
    n_test_images: int = 2_000
    steps: int = 1200
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 60
    weight_decay: float = 0.05
    max_shift: tuple[int, int] = (1, 3)  # augmentation: random translation in pixels (horizontal, vertical)
    brightness: float = 0.08  # augmentation: multiply pixels by 1 +- this
    probe_train_images: int = 4_000  # of the training pool, for the linear probe on frozen features
