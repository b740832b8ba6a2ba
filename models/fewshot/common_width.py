"""Any encoder width d -> the common width D that the shared projector reads.

Features are first centred and scaled by statistics of the modality's own samples (at few-shot time, of the k
samples given), then mapped by a fixed random matrix with orthonormal columns (d <= D: an isometric embedding,
nothing lost) or orthonormal rows (d > D: a Johnson-Lindenstrauss projection), seeded by (d, D) only, and scaled
so that every common coordinate has unit mean square. Chosen over zero-padding, which would put every narrow
encoder's energy in the same first coordinates, and over feature selection, which drops information.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from epalm.models.fewshot.isometry import haar_orthogonal


@dataclass
class FeatureStatistics:
    """Centre and scale of one modality's features: `(f - mean) / scale` has unit mean square per coordinate."""

    mean: torch.Tensor  # (d,)
    scale: torch.Tensor  # ()

    @classmethod
    def of(cls, features: torch.Tensor, eps: float = 1e-6) -> FeatureStatistics:
        """features: (M, d), M >= 1. One scalar scale, not one per coordinate, so that a rotation of the
        features commutes with the normalisation."""
        mean = features.mean(0)
        scale = (features - mean).pow(2).mean().add(eps).sqrt()
        return cls(mean, scale)


class CommonWidth(nn.Module):
    """`(M, d)` features -> `(M, D)`: normalised by the given statistics, then the fixed map of this (d, D)."""

    def __init__(self, width_in: int, width_common: int):
        super().__init__()
        self.width_in, self.width_common = width_in, width_common
        square = haar_orthogonal(max(width_in, width_common), seed=f"common-width/{width_in}->{width_common}")
        matrix = square[:width_common, :width_in]  # orthonormal columns (d <= D) or rows (d > D)
        # |Mx|^2 = |x|^2 (d <= D) or about D/d |x|^2 (d > D): this factor gives unit mean square per common coordinate
        self.register_buffer("matrix", matrix * (width_common / min(width_in, width_common)) ** 0.5, persistent=False)

    def forward(self, features: torch.Tensor, statistics: FeatureStatistics) -> torch.Tensor:
        if features.shape[-1] != self.width_in:
            raise ValueError(f"expected features of width {self.width_in}, got {tuple(features.shape)}")
        return ((features - statistics.mean) / statistics.scale) @ self.matrix.T
