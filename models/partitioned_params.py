"""Reading weights that DeepSpeed ZeRO-3 has partitioned.

Under accelerate's DeepSpeed plugin with ZeRO stage 3, transformers builds the LM inside `deepspeed.zero.Init`
(even with `zero3_init_flag: false`: accelerate registers the ZeRO-3 config with transformers either way), so
every LM weight is already a shard when our code first sees it: `weight.shape` is `(0,)` and its values are
elsewhere. Code that reads a frozen weight (the soft prompt started from vocabulary rows, parameter counts)
goes through these helpers, which gather the whole tensor for the duration of a `with` block and do nothing
for ordinary tensors.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch


def is_partitioned(param: torch.Tensor) -> bool:
    """A parameter managed by ZeRO-3 (it carries DeepSpeed's `ds_id`)."""
    return hasattr(param, "ds_id")


def full_numel(param: torch.Tensor) -> int:
    """The number of elements of the whole tensor, also when only a shard is held here."""
    return int(param.ds_numel) if is_partitioned(param) else param.numel()


def full_shape(param: torch.Tensor) -> torch.Size:
    return torch.Size(param.ds_shape) if is_partitioned(param) else param.shape


@contextlib.contextmanager
def gathered(params: Iterable[torch.Tensor], modifier_rank: int | None = None) -> Iterator[None]:
    """The whole tensors inside the block. `modifier_rank`: the process whose in-place changes are kept
    (None: read only), as in `deepspeed.zero.GatheredParameters`. A no-op without partitioned parameters."""
    params = [p for p in params if is_partitioned(p)]
    if not params:
        yield
        return
    import deepspeed  # only reached when DeepSpeed partitioned the parameters, so it is installed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield
