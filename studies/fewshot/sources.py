"""What training draws from: a modality's items as (feature, caption) pairs, one caption drawn per item.

`MediaSource`: a modality pool; the feature is its encoder's last-block CLS, the caption one of the item's.
`TextSource`: the seen captions as a modality of their own (the issue's "text embeddings"): the feature is
the embedding of one caption of an item, the target another caption of the same item (a paraphrase).
Both also give the target caption's embedding, which the hypernetwork's set encoder reads.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from epalm.models.fewshot.caption_embedding import caption_embeddings
from epalm.models.fewshot.common_width import FeatureStatistics
from epalm.studies.fewshot.features import ModalityPool


@dataclass
class Draw:
    features: torch.Tensor  # (n, d)
    captions: list[str]
    caption_vectors: torch.Tensor  # (n, E)


class CaptionVectors:
    """Every caption of a pool embedded once: `vectors[i]` is `(captions of item i, E)`."""

    def __init__(self, captions: list[list[str]], embedding: torch.nn.Embedding, tokenizer):
        flat = [caption for item in captions for caption in item]
        table = caption_embeddings(embedding, tokenizer, flat)
        self.vectors = list(torch.split(table, [len(item) for item in captions]))


class MediaSource:
    def __init__(self, pool: ModalityPool, vectors: CaptionVectors):
        self.name, self.pool, self.vectors = pool.name, pool, vectors
        self.features = pool.features[:, -1]

    @property
    def width(self) -> int:
        return self.features.shape[1]

    def __len__(self) -> int:
        return len(self.pool)

    def statistics(self) -> FeatureStatistics:
        return FeatureStatistics.of(self.features)

    def draw(self, indices: list[int], rng: random.Random) -> Draw:
        chosen = [rng.randrange(len(self.pool.captions[i])) for i in indices]
        return Draw(self.features[indices], [self.pool.captions[i][c] for i, c in zip(indices, chosen)],
                    torch.stack([self.vectors.vectors[i][c] for i, c in zip(indices, chosen)]))


class TextSource:
    name = "text"

    def __init__(self, sources: list[MediaSource]):
        self.items = [(source, i) for source in sources for i in range(len(source)) if
                      len(source.pool.captions[i]) >= 2]
        self.width = sources[0].vectors.vectors[0].shape[1]

    def __len__(self) -> int:
        return len(self.items)

    def statistics(self) -> FeatureStatistics:
        return FeatureStatistics.of(torch.cat([s.vectors.vectors[i] for s, i in self.items[::7]]))

    def draw(self, indices: list[int], rng: random.Random) -> Draw:
        features, captions, vectors = [], [], []
        for index in indices:
            source, item = self.items[index]
            given, target = rng.sample(range(len(source.pool.captions[item])), 2)
            features.append(source.vectors.vectors[item][given])
            captions.append(source.pool.captions[item][target])
            vectors.append(source.vectors.vectors[item][target])
        return Draw(torch.stack(features), captions, torch.stack(vectors))
