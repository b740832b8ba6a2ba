"""What the encoders wrapping a frozen library model (timm, transformers) share."""
from __future__ import annotations

import json
from typing import Any, Sequence

import torch
from torch import nn
from transformers.utils import cached_file

from epalm.common.errors import ConfigError
from epalm.models.encoders.base import READOUTS, PerceptionEncoder


class LibraryEncoder(PerceptionEncoder):
    """A `PerceptionEncoder` around `self.model`, a library model that stays frozen and in eval mode."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> LibraryEncoder:
        super().train(mode)
        self.model.eval()  # frozen: dropout and drop-path stay off while the bridge trains
        return self

    def check_num_tokens(self, num_tokens: int) -> None:
        if not 1 <= num_tokens <= self.num_layers:
            raise ConfigError(f"num_tokens (injected_hidden_states) must be in 1..{self.num_layers}, got {num_tokens}")

    def last_block_tokens(
        self, hidden_states: Sequence[torch.Tensor], num_tokens: int, final_norm: nn.Module | None, readout: str,
        num_prefix_tokens: int, last_is_normed: bool = False, token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(B, K, d)` (or the patch tokens `(B, N, d)` of block -K) from transformers' `hidden_states`: entry 0
        is the embedding output and entry i the output of block i-1, so the last K entries are the last K blocks.
        Patch tokens start after the `num_prefix_tokens` (CLS, AST's distillation token, registers).
        final_norm: None where the model has none (VideoMAE with mean pooling); last_is_normed: the last entry
        already went through it (Whisper), so it is not normed twice. token_mask: `(B, T)`, the tokens of each sample
        that the mean readout averages (wav2vec2's frames of the clip itself, not its padding); default all."""
        if len(hidden_states) != self.num_layers + 1:
            raise RuntimeError(f"model returned {len(hidden_states)} hidden states, expected {self.num_layers + 1}")
        blocks = hidden_states[-num_tokens:]
        if readout == "patches":
            return blocks[0][:, num_prefix_tokens:]
        last = len(blocks) - 1

        def normed(k: int, tokens: torch.Tensor) -> torch.Tensor:
            # LayerNorm is per token: norming the tokens read alone is the same as norming whole sequences
            return tokens if final_norm is None or (last_is_normed and k == last) else final_norm(tokens)

        if readout == "cls":
            return torch.stack([normed(k, h[:, 0]) for k, h in enumerate(blocks)], dim=1)
        def mean(tokens: torch.Tensor) -> torch.Tensor:
            if token_mask is None:
                return tokens.mean(1)
            weights = token_mask.to(tokens.dtype)[:, :, None]  # (B, T, 1)
            return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1)

        if readout == "mean":
            return torch.stack([mean(normed(k, h[:, num_prefix_tokens:])) for k, h in enumerate(blocks)], dim=1)
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")

    @staticmethod
    def split_prefix_tokens(per_block: Sequence[tuple[torch.Tensor, torch.Tensor]], final_norm: nn.Module,
                            readout: str) -> torch.Tensor:
        """`(B, K, d)` (or block -K's patch tokens) from `(patch tokens, prefix tokens)` per block, as timm's and
        open_clip's `forward_intermediates` give them (prefix position 0: the class token)."""
        if readout == "patches":  # block -K as it leaves the block (LLaVA reads hidden_states[-2] so)
            return per_block[0][0]
        if readout == "mean":
            return torch.stack([final_norm(patches).mean(1) for patches, _ in per_block], dim=1)
        if readout == "cls":  # the norm works per token: the class tokens alone
            return final_norm(torch.stack([prefix[:, 0] for _, prefix in per_block], dim=1))
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")


def pad_width(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """`(..., d)` zero-padded to `(..., width)`: the narrower stages of a hierarchical encoder (a CNN's, a Swin's) as
    vectors of the last stage's width. A Linear over the padded vector equals one over the stage's own width (its
    extra columns multiply zeros), so the connectors need not know each stage's width."""
    missing = width - tokens.shape[-1]
    return nn.functional.pad(tokens, (0, missing)) if missing > 0 else tokens


def read_preprocessor_config(name: str) -> dict[str, Any]:
    """The `preprocessor_config.json` of a transformers folder or hub repo; {} when it has none."""
    try:
        path = cached_file(name, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return {}
    if path is None:
        return {}
    with open(path) as handle:
        return json.load(handle)
