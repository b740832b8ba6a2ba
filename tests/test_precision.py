"""Frozen modules held in the autocast dtype run outside autocast (models/precision.py); the trainable parts
stay under it. On the CPU that changes no value: tested bit for bit against the earlier behaviour."""
from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from epalm.models.precision import held_dtype, native_precision
import epalm.models.epalm
from tests.tiny_models import TINY_VIT, tiny_lm_config, tiny_model


def half_model(kind: str = "opt", lm_dtype: str = "bfloat16", encoder_dtype: str = "bfloat16"):
    lm = tiny_lm_config(kind)
    lm.dtype = lm_dtype
    return tiny_model(kind, lm=lm, encoders={"image": dataclasses.replace(TINY_VIT, dtype=encoder_dtype)})


def batch(model, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 90, (2, 7), generator=generator)
    ids[:, 0] = model.lm.model.config.bos_token_id
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    media = torch.randn(2, 3, 32, 32, generator=generator)
    return ids, mask, media


def autocast_seen(model, ids, mask, media) -> dict[str, bool]:
    """Whether autocast was on when the first LM layer, the first encoder block and the connector ran."""
    seen = {}
    parts = {"lm": model.lm.layers[0], "encoder": model.encoder_for().model.blocks[0], "connector": model.connector_for()[0]}
    handles = [module.register_forward_pre_hook(lambda m, a, name=name: seen.__setitem__(
        name, torch.is_autocast_enabled("cpu"))) for name, module in parts.items()]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(ids, mask, media=media)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_frozen_parts_in_the_autocast_dtype_run_outside_autocast_the_connector_under_it():
    model = half_model()
    assert autocast_seen(model, *batch(model)) == {"lm": False, "encoder": False, "connector": True}
    fp32_lm = half_model(lm_dtype="float32", encoder_dtype="float32")  # autocast still lowers their matmuls
    assert autocast_seen(fp32_lm, *batch(fp32_lm)) == {"lm": True, "encoder": True, "connector": True}


@pytest.mark.parametrize("kind", ["opt", "opt-post-ln", "llama"])
def test_training_step_values_are_bit_identical_to_running_under_autocast(kind, monkeypatch):
    model = half_model(kind)
    model.train()
    ids, mask, media = batch(model)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids, mask, media=media).logits
        logits.float().square().mean().backward()
        return logits, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    native_logits, native_grads = step()
    monkeypatch.setattr(epalm.models.epalm, "native_precision", lambda module: contextlib.nullcontext())
    autocast_logits, autocast_grads = step()
    assert torch.equal(native_logits, autocast_logits)
    assert len(native_grads) == len(autocast_grads) > 0
    for native, under_autocast in zip(native_grads, autocast_grads):
        assert torch.equal(native, under_autocast)


def test_held_dtype_follows_the_weights():
    model = half_model()
    assert held_dtype(model.lm) == torch.bfloat16 and held_dtype(model.connector_for()) == torch.float32
    model.lm.to(torch.float32)
    assert held_dtype(model.lm) == torch.float32
    mixed = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).to(torch.bfloat16))
    assert held_dtype(mixed) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        with native_precision(mixed):  # weights of two dtypes: autocast stays on
            assert torch.is_autocast_enabled("cpu")
        with native_precision(mixed[1]):
            assert not torch.is_autocast_enabled("cpu")
    with native_precision(mixed[1]):  # no autocast to turn off
        assert not torch.is_autocast_enabled("cpu")
