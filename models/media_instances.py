"""How the media instances of a batch are numbered, so the collator and the model agree.

A batch with placeholders carries, per modality, its instances stacked `(M_m, ...)`. Instances are
numbered modality by modality in `instance_order` (sorted names), each modality's in stack order:
instance `i` of the batch is row `i` of the concatenation. `media_index[b, t]` is -1 for text and
`i * W + j` for the j-th of the W positions of instance i (W = the connector's tokens per instance:
1 slot for eP-ALM layer injection, N input tokens for the prefix connector).
"""
from __future__ import annotations

from collections.abc import Iterable


def instance_order(modalities: Iterable[str]) -> list[str]:
    return sorted(modalities)
