"""Training the LM too (model.lm.train lora | full): what trains, checkpoints in peft's / transformers' formats, the
injection hooks under LoRA, and a run end to end."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from epalm.common.config_io import ConfigError
from epalm.models.checkpoint import load_checkpoint, load_checkpoint_weights, save_checkpoint
from epalm.models.language_models.frozen_lm import build_language_model
from epalm.models.language_models.lm_checkpoint import peft_key
from epalm.models.language_models.lm_training import LoraSettings
from epalm.models.param_count import parameter_report
import epalm.training.run as entry
from tests.test_injection import reference_forward_opt
from tests.tiny_models import images, text_batch, tiny_lm_config, tiny_model
from tests.tiny_run import build_tiny_setup, tiny_config
from epalm.training.loss import training_loss
from epalm.training.optim import build_optimizer
from epalm.training.run_config import TrainConfig


def lm_trained_model(train: str, kind: str = "opt", seed: int = 0, lora: LoraSettings | None = None, **overrides):
    lm = dataclasses.replace(tiny_lm_config(kind), train=train, lora=lora or LoraSettings(r=4, alpha=8))
    return tiny_model(kind, seed=seed, lm=lm, **overrides)


def randomise_lora_b(model) -> None:
    """LoRA starts as the identity (B = 0): give B values so that the adapters change the LM's function."""
    torch.manual_seed(5)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.3)


def train_steps(model, steps: int = 3) -> dict:
    """A few AdamW steps through the trainer's optimizer groups and loss; returns the optimizer's groups."""
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2, prompt_lr=1e-2, lm_lr=1e-2, weight_decay=0.0))
    ids, mask = text_batch()
    labels = ids.masked_fill(mask == 0, -100)
    model.train()
    for _ in range(steps):
        training_loss(model, ids, mask, labels, media=images()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {g["name"]: g for g in optimizer.param_groups}


@pytest.mark.parametrize("kind", ["opt", "llama"])
def test_lora_trains_adapters_and_bridge_only(kind):
    model = lm_trained_model("lora", kind, lora=LoraSettings(r=4, alpha=8, dropout=0.1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if ".lora_" in n}
    assert lora and all(n.startswith("lm.") and (".q_proj." in n or ".v_proj." in n) for n in lora)
    assert all(n.startswith(("connectors.", "prompt_module.")) for n in trainable - lora)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in lora)
    groups = train_steps(model)
    assert {id(p) for p in groups["lm"]["params"]} == {id(p) for n, p in model.named_parameters() if n in lora}
    # The LM's own dropout stays off; LoRA's dropout (asked for here) follows train().
    dropouts = [(n, m) for n, m in model.lm.model.named_modules() if isinstance(m, torch.nn.Dropout)]
    assert all(m.training == (".lora_dropout." in n) for n, m in dropouts) and not model.lm.model.training
    model.eval()
    assert not any(m.training for _, m in dropouts)
    after = model.state_dict()
    for key, value in before.items():
        if key in trainable:
            assert not torch.equal(value, after[key]), f"{key} did not train"
        else:
            assert torch.equal(value, after[key]), f"frozen tensor {key} changed"


def test_full_fine_tuning_trains_every_lm_weight_and_no_encoder_weight():
    model = lm_trained_model("full")
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.lm.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = train_steps(model)
    assert len(groups["lm"]["params"]) == len(list(model.lm.parameters())) and groups["lm"]["lr"] == 1e-2
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith(("lm.", "connectors.", "prompt_module.")):
            assert not torch.equal(value, after[key]), f"{key} did not train"
        else:
            assert key.startswith("encoders.") and torch.equal(value, after[key]), f"{key} changed"
    assert not model.lm.model.training
    assert "every weight trains" in parameter_report(model)


def test_parameter_report_shows_the_adapters():
    model = lm_trained_model("lora")
    adapters = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert adapters == 4 * 2 * (4 * 32 + 32 * 4)  # 4 layers x (q, v) x (A: r x 32 + B: 32 x r)
    line = next(line for line in parameter_report(model).splitlines() if line.strip().startswith("lm "))
    assert f"{adapters:,} trainable" in line and "LoRA adapters r=4 alpha=8" in line and "q_proj, v_proj" in line
    assert "trainable" in parameter_report(tiny_model("opt")) and "LoRA" not in parameter_report(tiny_model("opt"))


def test_hooks_still_inject_under_lora():
    """With LoRA adapters that change the LM, eP-ALM's injection still equals the hand-written reference forward
    (epalm mode: the hooks fire at the planned layers), and the logits depend on the image."""
    model = lm_trained_model("lora", injection_mode="epalm", mlp=True)
    randomise_lora_b(model)
    ids, mask = text_batch()
    features = torch.randn(ids.shape[0], 2, model.encoder_for().hidden_size)
    with torch.no_grad():
        ours = model(ids, mask, features=features).logits
        ref = reference_forward_opt(model, ids, mask, features)
        plain = lm_trained_model("frozen", injection_mode="epalm", mlp=True)(ids, mask, features=features).logits
    torch.testing.assert_close(ours[mask.bool()], ref[mask.bool()], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, plain, atol=1e-4), "the LoRA adapters should change the function"
    causal = lm_trained_model("lora")
    randomise_lora_b(causal)
    with torch.no_grad():
        a = causal(ids, mask, media=images(3, seed=2)).logits
        b = causal(ids, mask, media=images(3, seed=7)).logits
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("kind", ["opt", "llama", "gpt2"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_generation_equals_recomputation_with_lora(kind, num_beams):
    model = lm_trained_model("lora", kind)
    randomise_lora_b(model)
    ids, mask = text_batch(batch=3, length=5, left_pad=True)
    kwargs = dict(media=images(3), max_new_tokens=8, num_beams=num_beams, min_new_tokens=8)
    cached = model.generate(ids, mask, use_cache=True, **kwargs)
    assert torch.equal(cached, model.generate(ids, mask, use_cache=False, **kwargs))


def _logits(model):
    ids, mask = text_batch()
    with torch.no_grad():
        return model(ids, mask, media=images()).logits


def test_lora_checkpoint_round_trip_in_peft_format(tmp_path):
    from peft import PeftModel

    model = lm_trained_model("lora", seed=3)
    train_steps(model, 2)
    save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt" / "lora").iterdir()) == ["adapter_config.json",
                                                                           "adapter_model.safetensors"]
    assert not any(".lora_" in k for k in load_file(str(tmp_path / "ckpt" / "model.safetensors")))
    torch.manual_seed(3)  # the tiny LM is random: rebuild the same frozen weights
    loaded, _ = load_checkpoint(tmp_path / "ckpt", load_tokenizer_if_missing=False)
    assert loaded.lm.finetuning == "lora" and torch.equal(_logits(model), _logits(loaded))
    # peft itself loads the adapters into the plain LM: the same LM function.
    torch.manual_seed(3)
    base = build_language_model(tiny_lm_config("opt")).model
    peft_lm = PeftModel.from_pretrained(base, str(tmp_path / "ckpt" / "lora"))
    ids, mask = text_batch()
    with torch.no_grad():
        torch.testing.assert_close(peft_lm(input_ids=ids, attention_mask=mask).logits,
                                   model.lm.model(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=0)


def test_full_checkpoint_round_trip_as_a_transformers_folder(tmp_path):
    from transformers import AutoModelForCausalLM

    model = lm_trained_model("full", seed=3)
    train_steps(model, 2)
    save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt" / "lm").iterdir()) == ["config.json", "model.safetensors"]
    fresh = lm_trained_model("full", seed=3)  # the same frozen encoder; every LM weight comes from the checkpoint
    with torch.no_grad():
        for param in fresh.lm.parameters():
            param.normal_()
    load_checkpoint_weights(fresh, tmp_path / "ckpt")
    assert torch.equal(_logits(model), _logits(fresh))
    lm = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ckpt" / "lm"))
    ids, mask = text_batch()
    with torch.no_grad():
        torch.testing.assert_close(lm(input_ids=ids, attention_mask=mask).logits,
                                   model.lm.model(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=0)


def test_loading_checks_how_the_lm_was_trained(tmp_path):
    save_checkpoint(lm_trained_model("lora"), tmp_path / "lora")
    with pytest.raises(ConfigError, match="model.lm.train=lora"):
        load_checkpoint_weights(tiny_model("opt"), tmp_path / "lora")
    with pytest.raises(ConfigError, match="r: checkpoint 4, configured 8"):
        load_checkpoint_weights(lm_trained_model("lora", lora=LoraSettings(r=8)), tmp_path / "lora")
    save_checkpoint(tiny_model("opt"), tmp_path / "frozen")
    with pytest.raises(ConfigError, match="model.lm.train=frozen"):
        load_checkpoint_weights(lm_trained_model("full"), tmp_path / "frozen")
    # The strict key check still sees inside the adapter file: a missing adapter tensor is named.
    path = tmp_path / "lora" / "lora" / "adapter_model.safetensors"
    adapters = load_file(str(path))
    dropped = sorted(adapters)[0]
    save_file({k: v for k, v in adapters.items() if k != dropped}, str(path))
    with pytest.raises(ValueError, match="expected .* found absent"):
        load_checkpoint_weights(lm_trained_model("lora"), tmp_path / "lora")


def test_config_errors():
    with pytest.raises(ConfigError, match=r"\['k_projj'\] match no module .* named \[.*'k_proj'"):
        lm_trained_model("lora", lora=LoraSettings(target_modules=["q_proj", "k_projj"]))
    with pytest.raises(ConfigError, match="float32"):
        dataclasses.replace(tiny_lm_config("opt"), train="full", dtype="bfloat16")
    with pytest.raises(ConfigError, match="not one of frozen, lora, full"):
        dataclasses.replace(tiny_lm_config("opt"), train="qlora")
    model = lm_trained_model("lora", "gpt2")  # peft's default for GPT-2: its fused c_attn (a Conv1D)
    assert {n.split(".")[-4] for n, _ in model.named_parameters() if ".lora_" in n} == {"c_attn"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("lm_training"))


def test_lora_run_then_evaluate_its_checkpoint(setup, tmp_path):
    config = str(tiny_config(setup, tmp_path / "c.yaml", max_steps=4))
    run = tmp_path / "run"
    lora = ["--set", "model.lm.train=lora", "--set", "model.lm.lora.r=2", "--set", "train.lm_lr=1e-2"]
    result = entry.main(["--config", config, "--output_dir", str(run), "--set", "task.val_split=", *lora])
    trainable = run / "checkpoints" / "last" / "trainable"
    adapter_config = json.loads((trainable / "lora" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 2 and sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and log[0]["lr"]["lm"] == 0.5e-2  # warm-up step 1 of 2
    with pytest.raises(ConfigError, match="model.lm.train: checkpoint 'lora', configured 'frozen'"):  # preflight
        entry.main(["--config", config, "--output_dir", str(tmp_path / "frozen_eval"), "--evaluate",
                    "--checkpoint", str(trainable)])
    evaluated = entry.main(["--config", config, "--output_dir", str(tmp_path / "eval"), "--evaluate",
                            "--checkpoint", str(trainable), *lora[:4]])
    assert evaluated["test"]["main"] == result["test"]["main"]
    # The chat / predict commands rebuild it from the run folder alone (its checkpoint says how the LM trained).
    from epalm.inference.checkpoint_source import load_model

    loaded = load_model(str(run), device="cpu")
    adapters = load_file(str(trainable / "lora" / "adapter_model.safetensors"))
    lora_state = {k: v for k, v in loaded.model.trainable_state_dict().items() if ".lora_" in k}
    assert loaded.model.lm.finetuning == "lora" and len(lora_state) == len(adapters) == 12
    assert all(torch.equal(v, adapters[peft_key(k)]) for k, v in lora_state.items())


def test_quick_demo_lm_group(tmp_path):
    """The demo's `lm` group in its --quick form: its four columns and the trainable parameter row."""
    from epalm.demo.runner import main as demo

    rows = demo(["--quick", "--groups", "lm", "--out", str(tmp_path)])
    params = next(row for row in rows if row["metric"] == "trainable parameters")
    assert params["blind"] < params["epalm"] < params["lora"] < params["full"]
    assert params["lora"] - params["epalm"] == 4 * 2 * (8 * 128 + 128 * 8)  # demo LM: 4 layers x (q, v), r 8, width 128
    assert all(row["group"] == "lm" for row in rows)
    assert "| task | metric | blind | eP-ALM | LoRA | full |" in (tmp_path / "summary.md").read_text()
