"""Connectors: the input-prefix connector, several media instances in one prompt (in-text slots and input
tokens), the encoders' mean readout, and the registry that makes a new connector one more file."""
from __future__ import annotations

import pytest
import torch

from epalm.common.errors import ConfigError, UnknownNameError
from epalm.models.checkpoint import load_checkpoint, save_checkpoint
from epalm.models.connectors import INPUT
from epalm.models.connectors import CONNECTORS
from epalm.models.media_instances import instance_order
from tests.tiny_models import images, text_batch, tiny_model

PREFIX = dict(connector="prefix", connector_options={"tokens": 2}, injected_hidden_states=1)
# LLaVA-1.5's projector over the ViT's patch tokens of block -2, pooled to a 2 x 2 grid: 4 positions an instance
PATCHES = dict(connector="mlp", readout="patches", patch_tokens=4, injected_hidden_states=2)
EXTRA = {"linear": {}, "prefix": PREFIX, "mlp": PATCHES}


def test_registry_lists_the_connectors_and_suggests_a_close_name():
    assert {"linear", "prefix", "mlp"} <= set(CONNECTORS.names())
    with pytest.raises(UnknownNameError, match="did you mean `prefix`"):
        tiny_model("opt", connector="prefx")
    with pytest.raises(ConfigError, match="tokens"):
        tiny_model("opt", connector="prefix", connector_options={"tokens": 0}, injected_hidden_states=1)
    with pytest.raises(ConfigError, match="connector_options.*tokenz"):
        tiny_model("opt", connector="prefix", connector_options={"tokenz": 2}, injected_hidden_states=1)


@pytest.mark.parametrize("hidden", [None, 16])
def test_prefix_connector_shapes_and_only_its_weights_train(hidden):
    model = tiny_model("opt", **{**PREFIX, "connector_options": {"tokens": 3, "hidden": hidden}})
    assert model.placement is INPUT and model.plan is None and model.tokens_per_instance == 3
    features = model.encode(images(4))
    assert features.shape == (4, 1, model.encoder_for().hidden_size)
    tokens = model.connect(features)
    assert tokens.shape == (4, 3, model.lm.embedding_size)  # OPT's word_embed_proj_dim (24), before project_in
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"connectors", "prompt_module"}
    assert model.prefix_len == 3 + 3  # prompt, then the instance's tokens
    ids, mask = text_batch()
    out = model(ids, mask, media=images(3))
    assert out.logits.shape == (3, ids.shape[1], 97)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.connector_for().parameters())
    assert all(p.grad is None for p in model.lm.parameters()) and all(p.grad is None for p in model.encoder_for().parameters())


def test_prefix_tokens_condition_the_text():
    model = tiny_model("llama", **PREFIX)
    ids, mask = text_batch(batch=2)
    with torch.no_grad():
        a = model(ids, mask, media=images(2, seed=1)).logits
        b = model(ids, mask, media=images(2, seed=5)).logits
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kind", ["opt", "llama"])
@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("connector", ["prefix", "mlp"])
def test_input_tokens_cached_generation_equals_recomputation(kind, num_beams, connector):
    model = tiny_model(kind, **EXTRA[connector])
    ids, mask = text_batch(batch=3, length=5, left_pad=True)
    kwargs = dict(media=images(3), max_new_tokens=6, num_beams=num_beams, min_new_tokens=6)
    cached = model.generate(ids, mask, use_cache=True, **kwargs)
    assert torch.equal(cached, model.generate(ids, mask, use_cache=False, **kwargs))


def test_prefix_checkpoint_round_trip(tmp_path):
    model = tiny_model("opt", **{**PREFIX, "connector_options": {"tokens": 2, "hidden": 8}})
    with torch.no_grad():
        for p in model.connector_for().parameters():
            p.add_(torch.randn_like(p))
    save_checkpoint(model, tmp_path / "ckpt")
    torch.manual_seed(0)  # the frozen tiny LM and ViT are random: rebuild them as tiny_model did
    loaded, _ = load_checkpoint(tmp_path / "ckpt", load_tokenizer_if_missing=False)
    assert loaded.config.connector == "prefix" and loaded.config.connector_options == {"tokens": 2, "hidden": 8}
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value), key
    ids, mask = text_batch()
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, media=x).logits, model(ids, mask, media=x).logits)


# --- several instances in one prompt --------------------------------------------------------------------------
def _two_instance_batch(width: int):
    """Two samples, left-padded, each with two instances placed at text positions 2 and 5 (W positions each)."""
    ids, mask = text_batch(batch=2, length=6 + 2 * width, left_pad=True, seed=3)
    mask[:] = 1
    ids[:, 0] = 2
    index = torch.full(ids.shape, -1)
    for row in range(2):
        for slot, start in enumerate((2, 4 + width)):
            instance = 2 * row + slot
            index[row, start : start + width] = torch.arange(width) + instance * width
    return ids, mask, index


@pytest.mark.parametrize("connector", ["linear", "prefix", "mlp"])
def test_each_placeholder_gets_its_own_instance(connector):
    """Swapping the two images of each sample together with the positions they fill gives the same logits;
    swapping the images alone changes them."""
    model = tiny_model("opt", **EXTRA[connector])
    width = model.tokens_per_instance
    ids, mask, index = _two_instance_batch(width)
    x = images(4, seed=9)  # instance 2*row + slot
    swapped_x = x[[1, 0, 3, 2]]
    swapped_index = index.clone()
    for row in range(2):
        for a, b in ((2 * row, 2 * row + 1), (2 * row + 1, 2 * row)):
            positions = (index[row] >= a * width) & (index[row] < (a + 1) * width)
            swapped_index[row, positions] = index[row, positions] - a * width + b * width
    with torch.no_grad():
        ours = model(ids, mask, media={"image": x}, media_index=index).logits
        same = model(ids, mask, media={"image": swapped_x}, media_index=swapped_index).logits
        other = model(ids, mask, media={"image": swapped_x}, media_index=index).logits
    torch.testing.assert_close(ours, same, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours[:, 5:], other[:, 5:], atol=1e-4)


@pytest.mark.parametrize("connector", ["linear", "prefix", "mlp"])
def test_causal_text_before_a_placeholder_does_not_see_its_instance(connector):
    model = tiny_model("llama", **EXTRA[connector])
    width = model.tokens_per_instance
    ids, mask, index = _two_instance_batch(width)
    x = images(4, seed=9)
    changed = x.clone()
    changed[[1, 3]] = images(2, seed=11)  # the second instance of each sample
    second = 4 + width
    with torch.no_grad():
        a = model(ids, mask, media={"image": x}, media_index=index).logits
        b = model(ids, mask, media={"image": changed}, media_index=index).logits
    torch.testing.assert_close(a[:, :second], b[:, :second], rtol=0, atol=0)
    assert not torch.allclose(a[:, second:], b[:, second:])


@pytest.mark.parametrize("connector", ["linear", "prefix", "mlp"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_generation_with_two_instances_equals_recomputation(connector, num_beams):
    model = tiny_model("llama", **EXTRA[connector])
    ids, mask, index = _two_instance_batch(model.tokens_per_instance)
    mask[1, :2] = 0  # left padding in the second sample
    kwargs = dict(media={"image": images(4, seed=9)}, media_index=index, max_new_tokens=6, num_beams=num_beams,
                  min_new_tokens=6)
    cached = model.generate(ids, mask, use_cache=True, **kwargs)
    assert torch.equal(cached, model.generate(ids, mask, use_cache=False, **kwargs))


def test_instances_of_several_modalities_are_numbered_in_instance_order():
    assert instance_order({"video", "audio", "image"}) == ["audio", "image", "video"]


# --- encoder readout ------------------------------------------------------------------------------------------
def test_mean_readout_is_the_mean_of_the_normed_patch_tokens():
    model = tiny_model("opt", readout="mean")
    vit = model.encoder_for().model
    x = images(2)
    with torch.no_grad():
        ours = model.encode(x)
        expected_last = vit.forward_features(x)[:, vit.num_prefix_tokens:].mean(1)  # the last block, normed
    assert ours.shape == (2, 2, vit.embed_dim)
    torch.testing.assert_close(ours[:, -1], expected_last, rtol=1e-5, atol=1e-5)
    cls = tiny_model("opt").encode(x)
    assert not torch.allclose(cls, ours)
    with pytest.raises(ConfigError, match="readout"):
        tiny_model("opt", readout="max")
