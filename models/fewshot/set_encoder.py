"""What the hypernetwork reads of k samples of one modality: a set encoder, invariant to the samples' order.

With captions, each sample i gives a caption code u_i (a learned linear map of its caption embedding) and its
common-width feature x_i (normalised by the k samples' own statistics, so centred). The set is summarised as
- `readout` (r, D): the linear map from a feature to its predicted (centred) caption code, fitted on the k pairs
  in closed form: kernel ridge regression (`solver: ridge`, U^T (X X^T + lambda I)^-1 X, lambda learned) or the
  plain cross-covariance (`solver: covariance`, U^T X / k). Both depend on the features only through their inner
  products, so the map turns with any isometry of the features: a rotated modality gets the rotated map;
- `mean_code` (r,): the codes' mean (what every caption of the modality shares);
- `summary` (h,): the samples' caption embeddings, embedded and pooled by their mean (`pooling: mean`) or by
  attention from a learned query (`pooling: attention`).
Feature-only (no captions): `readout` is the top-r principal directions of the features (signs fixed by the
projections' skew, also isometry-equivariant), `mean_code` zero, `summary` pooled from the principal spectrum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

POOLINGS = ("mean", "attention")
SOLVERS = ("ridge", "covariance")


@dataclass
class SetSummary:
    readout: torch.Tensor  # (r, D)
    mean_code: torch.Tensor  # (r,)
    summary: torch.Tensor  # (h,)


class SetEncoder(nn.Module):
    def __init__(self, width: int, caption_width: int, rank: int, summary_width: int = 64, pooling: str = "mean",
                 solver: str = "ridge"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"set encoder pooling must be one of {POOLINGS}, got {pooling!r}")
        if solver not in SOLVERS:
            raise ValueError(f"set encoder solver must be one of {SOLVERS}, got {solver!r}")
        self.width, self.rank, self.pooling, self.solver = width, rank, pooling, solver
        self.code = nn.Linear(caption_width, rank)
        self.element = nn.Sequential(nn.Linear(caption_width, summary_width), nn.GELU(),
                                     nn.Linear(summary_width, summary_width))
        self.spectrum = nn.Sequential(nn.Linear(rank + 1, summary_width), nn.GELU(),
                                      nn.Linear(summary_width, summary_width))
        self.query = nn.Parameter(torch.randn(summary_width) / math.sqrt(summary_width))
        self.key = nn.Linear(summary_width, summary_width)
        self.log_ridge = nn.Parameter(torch.zeros(()))  # lambda = exp(.) * D: X X^T's diagonal is about D

    def forward(self, features: torch.Tensor, captions: torch.Tensor | None = None) -> SetSummary:
        """features: (k, D) common-width, normalised by their own statistics; captions: (k, E) embeddings or None."""
        if features.ndim != 2 or features.shape[1] != self.width:
            raise ValueError(f"expected support features (k, {self.width}), got {tuple(features.shape)}")
        if captions is None:
            return self._feature_only(features)
        if captions.shape[0] != features.shape[0]:
            raise ValueError(f"{features.shape[0]} support features but {captions.shape[0]} captions")
        codes = self.code(captions)
        mean_code = codes.mean(0)
        centred = codes - mean_code
        k = features.shape[0]
        if self.solver == "ridge":
            gram = features @ features.T + self.log_ridge.exp() * self.width * torch.eye(k, dtype=features.dtype)
            readout = centred.T @ torch.linalg.solve(gram, features)
        else:
            readout = centred.T @ features / (k * self.width)
        return SetSummary(readout, mean_code, self._pool(self.element(captions)))

    def _pool(self, elements: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            return elements.mean(0)
        weights = torch.softmax(self.key(elements) @ self.query / math.sqrt(elements.shape[1]), dim=0)
        return weights @ elements

    def _feature_only(self, features: torch.Tensor) -> SetSummary:
        k = features.shape[0]
        _, singular, directions = torch.linalg.svd(features / math.sqrt(k), full_matrices=False)
        top = directions[: self.rank]
        skew = ((features @ top.T) ** 3).sum(0)
        top = top * torch.where(skew < 0, -1.0, 1.0)[:, None]
        readout = features.new_zeros(self.rank, self.width)
        readout[: top.shape[0]] = top / math.sqrt(self.width)
        spectrum = features.new_zeros(self.rank)
        spectrum[: top.shape[0]] = singular[: self.rank] / math.sqrt(self.width)
        summary = self.spectrum(torch.cat([spectrum, features.new_tensor([math.log(k)])]))
        return SetSummary(readout, features.new_zeros(self.rank), summary)
