"""What a medium's visual tokens are closest to in the LM's vocabulary (the REPL's `/tokens`).

The tokens are the connector's outputs for the medium, `model.connect(model.encode(x))`:
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

from epalm.models.epalm import EPALM
from epalm.common.errors import ConfigError


@dataclass
class TokenNeighbours:
    """label: which visual token (and where it enters the LM); neighbours: (token text, cosine similarity)."""

    label: str
    neighbours: list[tuple[str, float]]


@dataclass
class NearestTokens:
    space: str  # what the tokens were compared with, in words
    rows: list[TokenNeighbours]


def find_project_in(model: EPALM) -> torch.nn.Module | None:
    """The LM's input projection from embedding width to hidden width (OPT's `project_in`), if it has one."""
    for name, module in model.lm.model.named_modules():
        if name.split(".")[-1] == "project_in":
            return module
    return None


def vocabulary_space(model: EPALM, vocab_size: int) -> tuple[torch.Tensor, str]:
    """The rows the visual tokens are compared with `(V, d)`, and a description of that space."""
    embeddings = model.lm.model.get_input_embeddings().weight[:vocab_size].float()
    if model.placement == "input":
        return embeddings, "the LM's input embeddings"
    project_in = find_project_in(model)
    if project_in is not None:
        return project_in(embeddings.to(next(project_in.parameters()).dtype)).float(), \
            "the LM's input embeddings after project_in (the hidden width the layer tokens enter)"
    if embeddings.shape[1] != model.lm.hidden_size:
        raise ConfigError(f"this LM's input embeddings (width {embeddings.shape[1]}) and hidden states (width "
                          f"{model.lm.hidden_size}) differ and it has no project_in: /tokens cannot compare")
    return embeddings, "the LM's input embeddings (no project_in: hidden width = embedding width)"


def token_labels(model: EPALM, count: int) -> list[str]:
    if model.placement == "input":
        return [f"prefix token {j}" for j in range(count)]
    layers: dict[int, list[int]] = {}
    for layer, token in sorted(model.plan.layer_tokens.items()):
        layers.setdefault(token, []).append(layer)
    return [f"token {k} (layer{'s' if len(layers.get(k, [])) != 1 else ''} "
            f"{', '.join(map(str, layers.get(k, []))) or 'none'})" for k in range(count)]


@torch.no_grad()
def nearest_tokens(model: EPALM, tokenizer, media: torch.Tensor, modality: str, k: int) -> NearestTokens:
    """The k nearest vocabulary tokens of each visual token of one medium `media` (the encoder's input)."""
    if model.placement is None:
        raise ConfigError("this model is blind (model.visual: false): it makes no visual tokens")
    device = next(model.parameters()).device
    tokens = model.connect(model.encode(media[None].to(device), modality), modality)[0].float()
    space, description = vocabulary_space(model, len(tokenizer))
    similarity = F.normalize(tokens, dim=-1) @ F.normalize(space, dim=-1).T
    values, indices = similarity.topk(min(k, space.shape[0]), dim=-1)
    rows = []
    for label, row_values, row_indices in zip(token_labels(model, tokens.shape[0]), values.tolist(),
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
