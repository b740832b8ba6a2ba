"""What a frozen encoder's features are (`model.readout`), and patch tokens pooled to an N-token grid.

- `cls`: the CLS token of each of the encoder's last K blocks, through its final norm (eP-ALM): `(B, K, d)`.
- `mean`: the mean of the patch tokens of each of the last K blocks, through its final norm: `(B, K, d)`.
- `patches`: the patch tokens of ONE block, the K-th from the end (`hidden_states[-K]`: K = 1 the last block,
  K = 2 the one before it, LLaVA's `mm_vision_select_layer: -2`), as the library returns that block's output
  (LLaVA and multi_token read `hidden_states[select_layer]` without another norm): `(B, N, d)`, N the encoder's
  patch tokens, or `model.patch_tokens` of them after average pooling over the patch grid.

An encoder declares the readouts it can give (`readouts`; one without a CLS token has no `cls`) and, for
`patches`, the layout of its patch tokens (`patch_layout`: (rows, columns) of an image's grid, (frames, rows,
columns) of a video's, (length,) of an audio sequence)."""
from __future__ import annotations

import math

import torch
from torch.nn import functional

from epalm.common.errors import ConfigError

READOUTS = ("cls", "mean", "patches")
VECTOR_READOUTS = ("cls", "mean")  # one vector per block read


def check_readout(readout: str, patch_tokens: int | None, readouts: tuple[str, ...], layout: tuple[int, ...] | None,
                  what: str) -> None:
    """ConfigError unless the encoder (`what`, e.g. "model.encoders.image (type 'siglip_vision')") gives `readout`
    and, for pooled patch tokens, its grid can be pooled to `patch_tokens`."""
    if readout not in readouts:  # model.readout itself was checked against READOUTS with the model config
        reason = "has no CLS token" if readout == "cls" else f"cannot give the readout '{readout}'"
        raise ConfigError(f"model.readout '{readout}': {what} {reason}; it reads {', '.join(readouts)}")
    if readout == "patches" and patch_tokens is not None and layout is not None:
        pooled_layout(layout, patch_tokens, what)


def pooled_layout(layout: tuple[int, ...], count: int, what: str = "the encoder") -> tuple[int, ...]:
    """The grid `count` pooled tokens form: a g x g grid of an image's patches (count = g * g), the frames averaged
    first for a video's (frames, rows, columns), `count` steps of a 1-D sequence."""
    total = math.prod(layout)
    if not 1 <= count <= total:
        raise ConfigError(f"model.patch_tokens={count}: {what} has {total} patch tokens {tuple(layout)}; pool to "
                          f"1..{total}")
    if len(layout) == 1:
        return (count,)
    side = math.isqrt(count)
    if side * side != count or side > min(layout[-2:]):
        raise ConfigError(f"model.patch_tokens={count}: {what}'s patch tokens form a {' x '.join(map(str, layout))} "
                          f"grid; pooled tokens form a square grid of at most {min(layout[-2:])} x "
                          f"{min(layout[-2:])}: give a square number (e.g. {min(layout[-2:]) ** 2})")
    return (side, side)


def pool_patch_tokens(tokens: torch.Tensor, layout: tuple[int, ...], count: int) -> torch.Tensor:
    """`(B, N, d)` patch tokens laid out as `layout` (row-major) -> `(B, count, d)`, averaged over regions of the
    grid (adaptive average pooling: region boundaries as torch's)."""
    batch, length, width = tokens.shape
    if length != math.prod(layout):
        raise ValueError(f"{length} patch tokens do not fill the layout {tuple(layout)}")
    target = pooled_layout(layout, count)
    grid = tokens.transpose(1, 2).reshape(batch, width, *layout)  # (B, d, *layout)
    if len(layout) == 3:  # a video's frames: averaged, then the grid pooled
        grid = grid.mean(2)
    if len(layout) == 1:
        pooled = functional.adaptive_avg_pool1d(grid, target[0])
    else:
        pooled = functional.adaptive_avg_pool2d(grid, target)
    return pooled.flatten(2).transpose(1, 2)
