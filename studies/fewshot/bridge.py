"""Features of any encoder width -> LM input tokens: the common-width map of that width, an optional
isometry (training augmentation), then the shared projector with an optional adapter."""
from __future__ import annotations

import torch

from epalm.models.fewshot.common_width import CommonWidth, FeatureStatistics
from epalm.models.fewshot.isometry import IsometricTransform
from epalm.models.fewshot.low_rank_adapter import LowRankAdapter
from epalm.models.fewshot.projector import SharedProjector


class Bridge:
    def __init__(self, projector: SharedProjector):
        self.projector = projector
        self._maps: dict[int, CommonWidth] = {}

    def common(self, features: torch.Tensor, statistics: FeatureStatistics,
               isometry: IsometricTransform | None = None) -> torch.Tensor:
        """`(n, d)` -> `(n, D)`: normalised by `statistics`, mapped to the common width, then turned by `isometry`."""
        width = features.shape[-1]
        if width not in self._maps:  # any encoder width: its fixed map is made on first sight
            self._maps[width] = CommonWidth(width, self.projector.width)
        common = self._maps[width](features, statistics)
        return isometry(common) if isometry is not None else common

    def tokens(self, common: torch.Tensor, adapter: LowRankAdapter | None = None) -> torch.Tensor:
        return self.projector(common, adapter)
