"""Pretrain the demo's timm ViT from scratch on an image-only task: classify the scene's attributes from its CLS.

The network trained is the project's own encoder (`build_encoder`), so pixels are normalised with the very
mean/std its `preprocessing(False)` applies, and the CLS read is the one eP-ALM reads (last block, final norm).
Augmentation stays close to that test-time transform: no resize or crop of the 48 px image, only a horizontal
flip (which swaps left and right in the labels), a shift of a few pixels and a slight brightness change.
"""
from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from epalm.demo.pretraining.head_training import AttributeHeads, HeadTraining, Labels, pretrain_heads
from epalm.demo.pretraining.images import ImagePool
from epalm.demo.pretraining.settings import ViTSettings
from epalm.models.encoders import EncoderConfig, PerceptionEncoder, build_encoder

# A horizontal flip mirrors these attribute values; every other attribute keeps its label.
MIRRORED_VALUES = {"side": {"left": "right", "right": "left"}}


def encoder_config(settings: ViTSettings, checkpoint: str | None = None) -> EncoderConfig:
    return EncoderConfig(type="timm_vit", name=settings.name, checkpoint=checkpoint,
                         model_kwargs=dict(settings.model_kwargs), normalization="encoder")


def normalize(encoder: PerceptionEncoder, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> what `encoder.preprocessing(False)` makes of the same S x S image."""
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    return (pixels.float() / 255 - mean) / std


def augment(pixels: torch.Tensor, labels: dict[str, torch.Tensor], classes: dict[str, list[str]],
            settings: ViTSettings, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Flip (mirroring the labels that say left/right), shift and brighten a uint8 batch; returns floats in [0, 255]."""
    batch = pixels.float()
    labels = {attribute: values.clone() for attribute, values in labels.items()}
    flip = torch.rand(len(batch), generator=generator) < 0.5
    batch[flip] = batch[flip].flip(-1)
    for attribute, mirror in MIRRORED_VALUES.items():
        if attribute in labels:
            names = classes[attribute]
            swapped = torch.tensor([names.index(mirror[name]) for name in names])
            labels[attribute][flip] = swapped[labels[attribute][flip]]
    dx, dy = settings.max_shift
    if dx or dy:
        # Replicate padding: the image border is background, so a shift never cuts or mirrors a shape.
        padded = nn.functional.pad(batch, (dx, dx, dy, dy), mode="replicate")
        size_y, size_x = batch.shape[-2:]
        offsets_x = torch.randint(0, 2 * dx + 1, (len(batch),), generator=generator)
        offsets_y = torch.randint(0, 2 * dy + 1, (len(batch),), generator=generator)
        batch = torch.stack([padded[i, :, oy:oy + size_y, ox:ox + size_x]
                             for i, (ox, oy) in enumerate(zip(offsets_x.tolist(), offsets_y.tolist()))])
    scale = 1 + (torch.rand(len(batch), 1, 1, 1, generator=generator) * 2 - 1) * settings.brightness
    return (batch * scale).clamp(0, 255), labels


def pretrain_vit(encoder: PerceptionEncoder, heads: AttributeHeads, pool: ImagePool, settings: ViTSettings,
                 seed: int, progress: bool = True) -> list[float]:
    """`settings.steps` AdamW steps of summed cross-entropy over the attributes on augmented, normalised pixels
    (no weight decay on the ViT's position embeddings and tokens, timm's rule); returns the loss per step."""
    network = encoder.model
    network.requires_grad_(True)  # before the groups: timm's param_groups_weight_decay skips frozen parameters
    trained = nn.ModuleDict({"network": network, "heads": heads})
    no_decay = {f"network.{name}" for name in network.no_weight_decay()}
    recipe = HeadTraining(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                          warmup_steps=settings.warmup_steps, weight_decay=settings.weight_decay)

    def make_batch(pixels: torch.Tensor, labels: Labels, generator: torch.Generator) -> tuple[torch.Tensor, Labels]:
        pixels, labels = augment(pixels, labels, pool.classes, settings, generator)
        return normalize(encoder, pixels), labels

    return pretrain_heads(encoder, heads, pool.pixels, pool.labels, recipe, seed, make_batch, "ViT pretraining",
                          progress, param_groups_weight_decay(trained, settings.weight_decay, no_decay))


@torch.no_grad()
def cls_features(encoder: PerceptionEncoder, pixels: torch.Tensor, num_tokens: int,
                 batch_size: int = 256) -> torch.Tensor:
    """(N, num_tokens, d): the CLS of the last `num_tokens` blocks after the final norm, as eP-ALM reads them."""
    encoder.eval()
    return torch.cat([encoder(normalize(encoder, pixels[i:i + batch_size]), num_tokens)
                      for i in range(0, len(pixels), batch_size)])


def build_pretrained_encoder(settings: ViTSettings, checkpoint: str | None = None) -> PerceptionEncoder:
    return build_encoder(encoder_config(settings, checkpoint))
