"""The model: shapes, what trains, frozen parts, checkpoints (ours and the reference's), accounting."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from epalm.models.checkpoint import load_checkpoint, load_reference_checkpoint, reference_facts, save_checkpoint
from epalm.training.count_parameters import main as param_count_main
from tests.tiny_models import VOCAB, images, text_batch, tiny_model


@pytest.mark.parametrize("kind", ["opt", "llama"])
def test_forward_shapes(kind):
    model = tiny_model(kind)
    ids, mask = text_batch(batch=3, length=7)
    out = model(ids, mask, media=images(3))
    assert out.logits.shape == (3, 7, VOCAB)
    assert model.encode(images(3)).shape == (3, 2, model.encoder_for().hidden_size)


@pytest.mark.parametrize("kind", ["opt", "llama"])
def test_optimizer_step_changes_only_the_bridge(kind):
    model = tiny_model(kind, mlp=True)
    model.train()
    assert not model.lm.model.training and not model.encoder_for().model.training, "frozen parts must stay in eval mode"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("connectors.image.", "prompt_module.")) for n in names)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    ids, mask = text_batch()
    logits = model(ids, mask, media=images(3)).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        if key in names:
            assert not torch.equal(value, after[key]), f"{key} did not train"
        else:
            assert torch.equal(value, after[key]), f"frozen tensor {key} changed"
    # No gradient ever reaches a frozen parameter.
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("kind", ["opt", "llama"])
def test_logits_at_supervised_positions_only_give_the_same_loss_and_gradients(kind):
    """The trainer runs the LM head only where a next token is supervised (answer-only loss): same loss, same
    gradients as the head on every position."""
    from epalm.training.loss import lm_loss, predicting_positions

    model = tiny_model(kind)
    ids, mask = text_batch(batch=3, length=7, left_pad=True)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # supervise the last 3 tokens only, as an answer
    labels[1, 5] = -100
    positions = predicting_positions(labels)
    assert positions.tolist() == [3, 4, 5]
    x = images(3)

    def loss_and_grads(**kwargs):
        model.zero_grad(set_to_none=True)
        out = model(ids, mask, media=x, **({"logit_positions": kwargs["positions"]} if kwargs else {}))
        loss = lm_loss(out.logits, labels, "sample_sum", 0.1, **kwargs)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    full_loss, full_grads = loss_and_grads()
    sliced_loss, sliced_grads = loss_and_grads(positions=positions)
    torch.testing.assert_close(sliced_loss, full_loss)
    for name, grad in full_grads.items():
        torch.testing.assert_close(sliced_grads[name], grad, rtol=1e-5, atol=1e-7)
    assert model(ids, mask, media=x, logit_positions=positions).logits.shape[:2] == (3, 3)


def test_blind_model_has_no_encoder_and_only_a_prompt():
    model = tiny_model("opt", visual=False)
    assert not model.encoders and not model.connectors and model.placement is None
    assert set(model.trainable_state_dict()) == {"prompt_module.prefix_embedding.0.weight"}


def test_shared_connector_and_layer_norm_unfreezing():
    shared = tiny_model("opt", shared_connector=True)
    assert len(shared.connector_for()) == 1
    ln = tiny_model("llama", unfreeze_text_layer_norm=True)
    names = set(ln.trainable_state_dict())
    assert any(n.startswith("lm.") and "norm" in n for n in names)


def test_checkpoint_round_trip_is_exact(tmp_path):
    model = tiny_model("opt", mlp=True, seed=3)
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_()
    save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epalm_config.json", "model.safetensors"]
    loaded, _ = load_checkpoint(tmp_path / "ckpt", load_tokenizer_if_missing=False)
    original = model.trainable_state_dict()
    restored = loaded.trainable_state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    assert loaded.config == model.config


def _reference_blob(k: int, shared: bool, prompt_len: int, mlp: bool, d_enc: int, d_lm: int, d_emb: int) -> dict:
    """A checkpoint laid out as the reference saves it (keys from the spec), float32 tensors."""
    state = {}
    for i in range(1 if shared else k):
        state[f"connector.{i}.weight"] = torch.randn(d_lm, d_enc)
        state[f"connector.{i}.bias"] = torch.randn(d_lm)
    state["prompt_module.prefix_embedding.0.weight"] = torch.randn(prompt_len, d_emb)
    if mlp:
        for j in (1, 3):
            state[f"prompt_module.prefix_embedding.{j}.weight"] = torch.randn(d_emb, d_emb)
            state[f"prompt_module.prefix_embedding.{j}.bias"] = torch.randn(d_emb)
    return {"model": state, "optimizer": {}, "lr_scheduler": {"base_lrs": [1e-4]},
            "config": {"injected_hidden_states": k, "shared_connector": shared}, "epoch": 3,
            "best_valid": 0.5, "best_epoch": 2}


def test_reference_checkpoint_loads_and_facts_are_inferred(tmp_path):
    model = tiny_model("opt", mlp=True)
    d_enc, d_lm, d_emb = model.encoder_for().hidden_size, model.lm.hidden_size, model.lm.embedding_size
    blob = _reference_blob(2, False, 3, True, d_enc, d_lm, d_emb)
    torch.save(blob, tmp_path / "ref.pth")
    facts = load_reference_checkpoint(model, tmp_path / "ref.pth")
    assert facts["injected_hidden_states"] == 2 and facts["mlp"] and facts["prompt_len"] == 3
    assert not facts["shared_connector"]
    assert torch.equal(model.connector_for()[1].weight, blob["model"]["connector.1.weight"])
    assert torch.equal(model.prompt_module.prefix_embedding[3].bias, blob["model"]["prompt_module.prefix_embedding.3.bias"])
    shared = reference_facts(_reference_blob(6, True, 10, False, 8, 16, 16)["model"], {"injected_hidden_states": 6})
    assert shared["shared_connector"] and shared["injected_hidden_states"] == 6 and not shared["mlp"]


def test_mismatched_reference_checkpoint_fails_with_shapes(tmp_path):
    model = tiny_model("opt", mlp=False)
    d_enc, d_lm, d_emb = model.encoder_for().hidden_size, model.lm.hidden_size, model.lm.embedding_size
    torch.save(_reference_blob(2, False, 5, True, d_enc, d_lm, d_emb), tmp_path / "ref.pth")
    with pytest.raises(ValueError) as error:
        load_reference_checkpoint(model, tmp_path / "ref.pth")
    message = str(error.value)
    assert "prompt_module.prefix_embedding.0.weight: expected (3, 24), found (5, 24)" in message
    assert "prompt_module.prefix_embedding.1.weight: expected absent, found (24, 24)" in message
    assert "prompt_len: configured 3, checkpoint has 5" in message


def test_paper_parameter_claim_for_epalm_pt_l_on_meta(capsys):
    """eP-ALM_pt-L: OPT-6.7B + ViT-L/16, one shared Linear 1024 -> 4096, 10 plain prompt vectors."""
    count = param_count_main(["--lm", "opt-6.7b", "--encoder", "vit_large_patch16_224", "--shared_connector",
                              "--prompt_len", "10"])
    assert count.trainable == 1024 * 4096 + 4096 + 10 * 4096  # 4,239,360: "about 4.2M"
    assert 6.9e9 < count.total < 7.0e9
    assert round(count.percent, 2) == 0.06
    assert "0.06" in capsys.readouterr().out


def test_models_package_reimplements_no_library_block():
    """No decoder layer, attention or ViT block is re-implemented here: only composition."""
    forbidden = ("Attention", "DecoderLayer", "Block", "MLP", "Transformer")
    for path in Path("models").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert not any(word in node.name for word in forbidden), f"{path}: class {node.name}"
