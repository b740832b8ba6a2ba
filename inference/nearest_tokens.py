"""What a medium's visual tokens are closest to in the LM's vocabulary (the REPL's `/tokens`).

The tokens are the connector's outputs for the medium, `model.connect(model.encode(x))` (`visual_tokens`; the
medium is encoded once, its tokens then compared by `nearest_tokens`):
- input-prefix connector: its N tokens live in the LM's input-embedding space and are compared with the rows
  of the input embedding matrix;
- eP-ALM layer injection: one token per injected encoder block, each replacing the slot's hidden state at the
  input of its share of the LM's layers, so they live in the decoder's hidden width. They are compared with the input
  embeddings as the first layer receives them: after OPT's `project_in` when the LM has one (OPT-350m-style
  models whose embedding width differs from the hidden width), the embeddings themselves otherwise. Deeper
  layers' residual streams drift from that space; the comparison is the first-layer reading.
Similarity is cosine; the vocabulary is the tokenizer's (embedding rows beyond it, kept for padding, are not
tokens and are left out).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from epalm.common.errors import ConfigError
from epalm.models.epalm import EPALM


@dataclass
class TokenNeighbours:
    """label: which visual token (and where it enters the LM); neighbours: (token text, cosine similarity)."""

    label: str
    neighbours: list[tuple[str, float]]


@dataclass
class NearestTokens:
    space: str  # what the tokens were compared with, in words
    rows: list[TokenNeighbours]


@torch.no_grad()
def visual_tokens(model: EPALM, media: torch.Tensor, modality: str) -> torch.Tensor:
    """The visual tokens of one medium `media` (the encoder's input): the connector's outputs `(tokens, width)`,
    float, on the model's device."""
    if model.placement is None:
        raise ConfigError("this model is blind (model.visual: false): it makes no visual tokens")
    device = next(model.parameters()).device
    return model.connect(model.encode(media[None].to(device), modality), modality)[0].float()


@torch.no_grad()
def nearest_tokens(model: EPALM, tokenizer, tokens: torch.Tensor, k: int) -> NearestTokens:
    """The k nearest vocabulary tokens of each of one medium's visual `tokens` (`visual_tokens`' output)."""
    space, description = model.placement.vocabulary_space(model.lm, len(tokenizer))
    similarity = F.normalize(tokens, dim=-1) @ F.normalize(space, dim=-1).T
    values, indices = similarity.topk(min(k, space.shape[0]), dim=-1)
    rows = []
    labels = model.placement.token_labels(tokens.shape[0], model.plan.layer_tokens if model.plan else None)
    for label, row_values, row_indices in zip(labels, values.tolist(),
                                              indices.tolist()):
        rows.append(TokenNeighbours(label, [(tokenizer.decode([i]), v) for i, v in zip(row_indices, row_values)]))
    return NearestTokens(description, rows)


def format_nearest(report: NearestTokens) -> str:
    lines = [f"nearest vocabulary tokens by cosine similarity with {report.space}:"]
    width = max(len(row.label) for row in report.rows)
    for row in report.rows:
        cells = "  ".join(f"{text!r} {value:.3f}" for text, value in row.neighbours)
        lines.append(f"  {row.label:<{width}}  {cells}")
    return "\n".join(lines)
