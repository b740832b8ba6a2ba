"""How well the pretrained ViT sees the scene: its heads' held-out accuracy, and linear probes on frozen CLS tokens.

eP-ALM reads the CLS of the last K blocks through the final norm and maps them linearly into the LM, so the
probe asks exactly that: does a linear map (logistic regression) recover every attribute from the CLS of each
of the last two blocks, frozen?
"""
from __future__ import annotations

import torch

from epalm.demo.pretraining.head_training import AttributeHeads
from epalm.demo.pretraining.images import ImagePool
from epalm.demo.pretraining.probes import PROBED_BLOCKS, probe_accuracy
from epalm.demo.pretraining.vit import cls_features
from epalm.models.encoders import PerceptionEncoder


@torch.no_grad()
def head_accuracy(encoder: PerceptionEncoder, heads: AttributeHeads, pool: ImagePool) -> dict[str, float]:
    heads.eval()
    logits = heads(cls_features(encoder, pool.pixels, 1)[:, 0])
    return {a: round((logits[a].argmax(-1) == pool.labels[a]).float().mean().item(), 4) for a in logits}


def linear_probe(encoder: PerceptionEncoder, train: ImagePool, test: ImagePool) -> dict[str, dict[str, float]]:
    """block ("last", "last-1") -> attribute -> held-out accuracy of a logistic regression on that block's CLS."""
    return probe_accuracy(cls_features(encoder, train.pixels, PROBED_BLOCKS).numpy(), train.labels,
                          cls_features(encoder, test.pixels, PROBED_BLOCKS).numpy(), test.labels)
