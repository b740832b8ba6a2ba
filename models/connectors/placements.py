"""Where a connector's tokens enter the frozen LM: each connector declares a `Placement`, and the model, the
injection hooks (models/injection.py) and the nearest-token read-out ask it instead of branching on a name.

- `LAYERS` (eP-ALM): one slot position per media instance whose hidden state is replaced, at each injection
  layer of the plan, by that layer's share of the instance's K tokens (`(K, d_lm)` per row, d_lm the decoder's
  hidden width); masked as the injection mode says (models/injection.py).
- `INPUT` (input prefix, LLaVA-style projectors): N positions per instance whose input embeddings are the
  connector's N tokens (`(d_embed)` per row, the input-embedding width).

A new placement (a connector that writes somewhere else) is a subclass here; nothing else branches on it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from epalm.common.errors import ConfigError
from epalm.models.language_models.frozen_lm import FrozenLanguageModel


def put_rows(hidden: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`hidden` `(B, L, d)` with position (b, t) replaced by `rows[index[b, t]]` wherever index >= 0."""
    if rows is None or rows.shape[0] == 0:
        return hidden
    gathered = rows.to(hidden.dtype)[index.clamp_min(0)]
    return torch.where((index >= 0)[..., None], gathered, hidden)


class Placement(ABC):
    """name: what configs, reports and checkpoints call it. needs_plan: an injection plan (which LM layer gets
    which of the K tokens) must be built for it. masks_as_slots: its positions are slots (masked before the
    first injection layer, and as the injection mode says after)."""

    name: str
    needs_plan: bool = False
    masks_as_slots: bool = False

    def __repr__(self) -> str:
        return f"<placement {self.name}>"

    @abstractmethod
    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """Connector outputs of M instances `(M, W, d)` -> the rows media positions are filled from."""

    @abstractmethod
    def prefix_order(self, prompt_len: int, positions: int) -> tuple[int, int]:
        """(first media position, first prompt position) of the one-instance layout's prefix before BOS."""

    def write_embeddings(self, embeddings: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The input embeddings with this placement's rows written in (default: untouched)."""
        return embeddings

    def write_layer(self, hidden: torch.Tensor, index: torch.Tensor, rows: torch.Tensor,
                    token: int) -> torch.Tensor:
        """A layer's input hidden states with token `token` of each row written in (default: untouched)."""
        return hidden

    @abstractmethod
    def vocabulary_space(self, lm: FrozenLanguageModel, vocab_size: int) -> tuple[torch.Tensor, str]:
        """The rows `(V, d)` its tokens are compared with to name their nearest vocabulary tokens, and in words."""

    @abstractmethod
    def token_labels(self, count: int, layer_tokens: dict[int, int] | None) -> list[str]:
        """A label for each of an instance's `count` tokens: where it enters the LM (`layer_tokens`: the plan's)."""

    @abstractmethod
    def describe(self, tokens_per_instance: int, layers: list[int], num_tokens: int) -> str:
        """The bridge in a few words (`chat`'s header, model cards): `num_tokens` K tokens per instance, written
        into `layers` (layer injection) or as `tokens_per_instance` positions."""


class LayerInjection(Placement):
    name, needs_plan, masks_as_slots = "layers", True, True

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens  # one slot per instance: row i holds its K tokens

    def prefix_order(self, prompt_len: int, positions: int) -> tuple[int, int]:
        return 0, positions  # eP-ALM's layout: the slot at position 0, then the prompt

    def write_layer(self, hidden, index, rows, token):
        return put_rows(hidden, index, rows[:, token])

    def vocabulary_space(self, lm, vocab_size):
        embeddings = lm.model.get_input_embeddings().weight[:vocab_size].float()
        project_in = lm.project_in
        if project_in is not None:
            return project_in(embeddings.to(next(project_in.parameters()).dtype)).float(), \
                "the LM's input embeddings after project_in (the hidden width the layer tokens enter)"
        if embeddings.shape[1] != lm.hidden_size:
            raise ConfigError(f"this LM's input embeddings (width {embeddings.shape[1]}) and hidden states (width "
                              f"{lm.hidden_size}) differ and it has no project_in: /tokens cannot compare")
        return embeddings, "the LM's input embeddings (no project_in: hidden width = embedding width)"

    def token_labels(self, count, layer_tokens):
        layers: dict[int, list[int]] = {}
        for layer, token in sorted((layer_tokens or {}).items()):
            layers.setdefault(token, []).append(layer)
        return [f"token {k} (layer{'s' if len(layers.get(k, [])) != 1 else ''} "
                f"{', '.join(map(str, layers.get(k, []))) or 'none'})" for k in range(count)]

    def describe(self, tokens_per_instance, layers, num_tokens):
        return f"layer injection ({num_tokens} tokens into layers {min(layers)}-{max(layers)})"


class InputTokens(Placement):
    name = "input"

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.flatten(0, 1)  # instance i, token j -> row i * N + j

    def prefix_order(self, prompt_len: int, positions: int) -> tuple[int, int]:
        return prompt_len, 0  # the prompt, then the instance's N tokens

    def write_embeddings(self, embeddings, index, rows):
        return put_rows(embeddings, index, rows)

    def vocabulary_space(self, lm, vocab_size):
        return lm.model.get_input_embeddings().weight[:vocab_size].float(), "the LM's input embeddings"

    def token_labels(self, count, layer_tokens):
        return [f"prefix token {j}" for j in range(count)]

    def describe(self, tokens_per_instance, layers, num_tokens):
        return f"input-prefix connector ({tokens_per_instance} tokens per medium)"


LAYERS = LayerInjection()
INPUT = InputTokens()
