"""The GPU speed options, checked on the CPU: `train.fused_adamw` and `model.lm.compile`."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from epalm.common.errors import ConfigError
from tests.tiny_models import tiny_model
from epalm.training.loss import training_loss
from epalm.training.optim import build_optimizer, use_fused_adamw
from epalm.training.run_config import TrainConfig, resolve_config


def test_fused_adamw_auto_is_fused_on_a_gpu_only():
    on = lambda device: [{"params": [SimpleNamespace(device=torch.device(device))]}]
    assert use_fused_adamw("auto", on("cuda")) and not use_fused_adamw("auto", on("cpu"))
    assert use_fused_adamw(True, on("cpu")) and not use_fused_adamw(False, on("cuda"))
    model = tiny_model()
    assert not build_optimizer(model, TrainConfig()).defaults["fused"]  # CPU runs keep their numbers
    fused = build_optimizer(model, TrainConfig(fused_adamw=True))
    assert fused.defaults["fused"]
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    before = model.connector_for()[0].weight.detach().clone()
    fused.step()  # torch's fused AdamW runs on the CPU too
    assert not torch.equal(before, model.connector_for()[0].weight)


def test_fused_adamw_leaves_overflowed_steps_visible_to_the_gradient_scaler():
    """An fp16 step whose gradients overflow is skipped by the scaler before AdamW runs, as without fusing: so
    accelerate sees it skipped and the LR schedule does not advance on it."""
    model = tiny_model()
    optimizer = build_optimizer(model, TrainConfig(fused_adamw=True))
    calls = []
    step = optimizer.step
    optimizer.step = lambda *args, **kwargs: calls.append(1) or step(*args, **kwargs)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))  # the scaler's scale exists from the first scaled loss
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, float("inf"))
    before = model.connector_for()[0].weight.detach().clone()
    scaler.step(optimizer)
    scaler.update()
    assert calls == [] and torch.equal(before, model.connector_for()[0].weight)


def test_fused_adamw_setting_is_checked():
    assert resolve_config(["--set", "train.fused_adamw=false"]).train.fused_adamw is False
    assert resolve_config(["--set", "train.fused_adamw=auto"]).train.fused_adamw == "auto"
    with pytest.raises(ConfigError, match="fused_adamw"):
        resolve_config(["--set", "train.fused_adamw=sometimes"])
    with pytest.raises(ConfigError, match="compile"):
        resolve_config(["--set", "model.lm.compile=3"])


def test_compiled_lm_trains_and_generates_as_the_eager_one():
    """torch.compile traces the LM's forward with the injection hooks (aot_eager: the graphs dynamo and
    AOTAutograd capture, run without generated code; the inductor backend gave the same on the CPU, in minutes)."""
    eager = tiny_model()
    lm = copy.deepcopy(eager.config.lm)
    lm.compile = "aot_eager"
    compiled = tiny_model(lm=lm)
    ids = torch.tensor([[2, 5, 6, 7, 8], [2, 9, 10, 11, 12]])
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :3] = -100
    media = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    grads = []
    for model in (eager, compiled):
        model.train()
        loss = training_loss(model, ids, mask, labels, media=media)
        loss.backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    tokens = [model.generate(ids, mask, media=media, max_new_tokens=2) for model in (eager, compiled)]
    assert torch.equal(tokens[0], tokens[1])
    assert compiled.trainable_state_dict().keys() == eager.trainable_state_dict().keys()
