"""Frozen modules held in the autocast dtype run in that dtype, outside autocast.

Under mixed precision the frozen LM and encoders are held in fp16/bf16 (`lm.dtype`, `encoder.dtype` `auto`),
so autocast has nothing to lower in them: their matmuls run in that dtype either way. What autocast does add
on a GPU is its fp32 list: every LayerNorm's input, weight and bias cast to fp32, its fp32 output cast back
to half for each Linear that reads it (q, k and v separately), and the backward casting each of those
gradients again: about 16 copies per OPT layer, some 700 per OPT-2.7B training step. Outside autocast the
library's half-precision kernels accumulate in fp32 themselves, as in evaluation (which never runs under
autocast), so the values are those of autocast up to the rounding order inside a norm; on the CPU, whose
autocast leaves normalisations alone, they are bit-identical.

The trainable parts (connectors, soft prompt) stay under autocast: their fp32 weights are what it is for.
A frozen module not held in the autocast dtype (an fp32 LM under bf16 autocast, an encoder whose LayerNorms
train, an engine's fp32 shards, weights of two dtypes) stays under autocast too.
"""
from __future__ import annotations

import contextlib
import weakref

import torch
from torch import nn

# module -> ((identity, dtype, device) of its first parameter, the one dtype of its weights or None)
_HELD: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, torch.dtype | None]] = weakref.WeakKeyDictionary()


def held_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype every floating parameter of `module` is held in, None when they differ (or it has none).

    Cached: walking the ~500 parameter tensors of an LM takes about a millisecond, which a step need not pay.
    The cache is keyed on the first parameter (identity, dtype, device), which `.to()` changes and an
    engine's wrapping replaces; a later change of some other parameter's dtype alone would go unseen."""
    first = next(module.parameters(), None)
    if first is None:
        return None
    key = (id(first), first.dtype, first.device)
    cached = _HELD.get(module)
    if cached is not None and cached[0] == key:
        return cached[1]
    dtypes = {p.dtype for p in module.parameters() if p.is_floating_point()}
    dtype = dtypes.pop() if len(dtypes) == 1 else None
    _HELD[module] = (key, dtype)
    return dtype


def native_precision(module: nn.Module) -> contextlib.AbstractContextManager:
    """Autocast off around `module` when its weights are all held in the autocast dtype of their device."""
    first = next(module.parameters(), None)
    if first is None:
        return contextlib.nullcontext()
    device_type = first.device.type
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return contextlib.nullcontext()
    if held_dtype(module) != torch.get_autocast_dtype(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


def autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes matmuls in on `tensor`'s device, None when autocast is off there."""
    device_type = tensor.device.type
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)
