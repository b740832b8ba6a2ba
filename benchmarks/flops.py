"""Model FLOPs of a training step, and model FLOPs utilisation (MFU) against the GPU's dense peak.

A frozen LM computes no weight gradients, so a training step costs about 4 x N_lm FLOPs per LM position
(2 N forward, 2 N for the activation gradients), plus the encoder's forward 2 x N_enc per encoder token
when features are not cached. N counts the weights that multiply activations: the Linear and Conv
weights (embedding lookups cost nothing); the LM head only runs on text positions, the decoder layers on
every position (visual slot and prompt included). Attention's score products are left out (small at
these lengths), so MFU is slightly underestimated.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from epalm.models.epalm import EPALM

# Dense (no sparsity) bf16/fp16 tensor-core peaks from the vendors' datasheets, TFLOP/s. Matched by
# substring of torch.cuda.get_device_name(), first match wins (so "H100 PCIe" before "H100").
PEAK_DENSE_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_DENSE_TFLOPS:
        if key in device_name:
            return value
    return None


def matmul_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)))


@dataclass(frozen=True)
class StepFlops:
    lm: float
    encoder: float

    def total(self, cached: bool) -> float:
        return self.lm + (0.0 if cached else self.encoder)


def training_step_flops(model: EPALM, batch: int, text_len: int, head_positions: int | None = None) -> StepFlops:
    """head_positions: the text positions per sample the LM head runs at (all `text_len` by default; the
    answer-only loss runs it where a label follows only, `epalm.training.loss.predicting_positions`)."""
    head = model.lm.model.get_output_embeddings()
    head_weights = head.weight.numel() if head is not None else 0
    body = matmul_weights(model.lm) - head_weights
    positions = batch * (model.prefix_len + text_len)
    head_positions = text_len if head_positions is None else head_positions
    lm = 4.0 * (body * positions + head_weights * batch * head_positions)
    encoder = 0.0
    if model.encoders:
        vit = model.encoder_for().model
        tokens = vit.patch_embed.num_patches + getattr(vit, "num_prefix_tokens", 1)
        encoder = 2.0 * matmul_weights(model.encoder_for()) * batch * tokens
    return StepFlops(lm, encoder)


def utilisation(flops: float, seconds: float, peak: float | None) -> dict[str, float | None]:
    achieved = flops / seconds / 1e12
    return {"achieved_tflops": achieved, "mfu": achieved / peak if peak else None}


def device_peak(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    return peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
