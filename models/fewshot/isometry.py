"""Random isometries of the common feature space: the augmentation that multiplies the seen modalities.

An orthogonal matrix Q (optionally composed with a coordinate permutation, itself orthogonal) keeps every inner
product: <Qx, Qy> = <x, y>. Presented through a fresh Q, a seen encoder looks like a new encoder carrying the
same information, so the hypernetwork has to read a modality from its samples and cannot memorise coordinates.
Each transform is drawn from a seed and rebuilt from it alone (training logs the seeds).
"""
from __future__ import annotations

import hashlib

import torch


def _generator(seed: int | str) -> torch.Generator:
    digest = hashlib.sha256(str(seed).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def haar_orthogonal(width: int, seed: int | str) -> torch.Tensor:
    """A `(width, width)` orthogonal matrix drawn uniformly (Haar) from `seed`: QR of a Gaussian matrix with the
    signs of R's diagonal moved into Q (without that correction the draw is not uniform)."""
    gaussian = torch.randn(width, width, generator=_generator(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).float()


class IsometricTransform:
    """x -> x Q^T (rows are samples), Q = P H with H Haar-orthogonal and P a permutation (identity unless
    `permute`); rebuilt exactly from (width, seed, permute)."""

    def __init__(self, width: int, seed: int | str, permute: bool = False):
        self.width, self.seed, self.permute = width, seed, permute
        matrix = haar_orthogonal(width, seed)
        if permute:
            matrix = matrix[torch.randperm(width, generator=_generator(f"permutation/{seed}"))]
        self.matrix = matrix

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.matrix.to(features.dtype).T

    def describe(self) -> dict:
        """What a log needs to rebuild it."""
        return {"width": self.width, "seed": self.seed, "permute": self.permute}
