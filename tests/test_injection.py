"""The injection: layer schedule, the reference's equations (epalm mode), causality and the KV cache."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from epalm.models.injection import plan_injection, resolve_layer_index
from tests.tiny_models import images, text_batch, tiny_model


def test_schedule_matches_the_spec_example():
    plan = plan_injection(2, 6, num_tokens=3, num_layers=8)
    assert plan.layer_tokens == {2: 0, 3: 1, 4: 2, 5: 2}
    assert plan_injection(2, 6, 3, 8, text_step=2).layer_tokens == {2: 0, 4: 2}
    # select_higher_step: text_step = max(step, text_step); step = 12 // 6 = 2
    assert plan_injection(19, 31, 6, 32, select_higher_step=True).layer_tokens == {
        20: 0, 22: 1, 24: 2, 26: 3, 28: 4, 30: 5
    }
    assert plan_injection(0, 4, 1, 4).layer_tokens == {0: 0, 1: 0, 2: 0, 3: 0}


def test_relative_layer_indices_serve_every_depth():
    # The default -13..-1 is the reference's 19..31 on 32 layers and 11..23 on 24 layers.
    assert (resolve_layer_index(-13, 32, "s"), resolve_layer_index(-1, 32, "e")) == (19, 31)
    assert (resolve_layer_index(-13, 24, "s"), resolve_layer_index(-1, 24, "e")) == (11, 23)
    assert resolve_layer_index(-13, 12, "s") == 0
    assert resolve_layer_index(0.5, 12, "s") == 6
    assert resolve_layer_index(0.5, 32, "s") == 16
    with pytest.raises(ValueError, match="not a non-empty range"):
        plan_injection(5, 5, 2, 12)
    with pytest.raises(ValueError, match="multiple of text_step"):
        plan_injection(5, 6, 1, 12, text_step=4)


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]


def reference_forward_opt(model, ids, mask, features):
    """The spec's equations written out by hand, layer by layer, on the library's OPT blocks: soft prompt
    before BOS without position embedding, text positions from the text mask alone, the visual token
    PREPENDED at the first injection layer and REPLACING position 0 at later ones, its attention row and
    column fully open."""
    lm = model.lm.model
    decoder = lm.model.decoder
    plan = model.plan
    batch, length = ids.shape
    prompt = model.prompt_module()
    visual = model.connector_for()(features)
    embeds = torch.cat([prompt[None].expand(batch, -1, -1), decoder.embed_tokens(ids)], 1)
    if decoder.project_in is not None:
        embeds = decoder.project_in(embeds)
    positions = decoder.embed_positions(mask, 0)  # OPT's own rule on the text mask only
    hidden = embeds + torch.cat([torch.zeros_like(embeds[:, : prompt.shape[0]]), positions], 1)
    full_mask = torch.cat([torch.ones(batch, prompt.shape[0], dtype=mask.dtype), mask], 1).bool()
    n = full_mask.shape[1]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    attn = _additive(causal[None] & full_mask[:, None, :])
    added = False
    for idx, layer in enumerate(decoder.layers):
        if idx in plan.layer_tokens:
            token = visual[:, plan.layer_tokens[idx]][:, None]
            if not added:
                hidden = torch.cat([token, hidden], 1)
                attn = F.pad(attn, (1, 0, 1, 0), value=0.0)  # open row and column, as the reference pads
                added = True
            else:
                hidden = torch.cat([token, hidden[:, 1:]], 1)
        hidden = layer(hidden, attention_mask=attn)
    if decoder.final_layer_norm is not None:
        hidden = decoder.final_layer_norm(hidden)
    if decoder.project_out is not None:
        hidden = decoder.project_out(hidden)
    return lm.lm_head(hidden)[:, -length:]


@pytest.mark.parametrize("kind", ["opt", "opt-post-ln"])
@pytest.mark.parametrize("layers", [(1, 4, 1), (2, 4, 2)])
def test_epalm_mode_equals_hand_written_reference(kind, layers):
    start, end, text_step = layers
    model = tiny_model(kind, injection_mode="epalm", start_layer_idx=start, end_layer_idx=end, text_step=text_step,
                       mlp=True)
    ids, mask = text_batch()
    features = torch.randn(ids.shape[0], 2, model.encoder_for().hidden_size)
    with torch.no_grad():
        ours = model(ids, mask, features=features).logits
        ref = reference_forward_opt(model, ids, mask, features)
    valid = mask.bool()
    torch.testing.assert_close(ours[valid], ref[valid], rtol=1e-5, atol=1e-5)


def _later_tokens_changed(ids, mask, position):
    changed = ids.clone()
    changed[:, position:] = torch.where(mask[:, position:].bool(), (changed[:, position:] + 5) % 90 + 3, 1)
    return changed


@pytest.mark.parametrize("kind", ["opt", "llama"])
def test_causal_mode_never_sees_later_text_and_epalm_mode_does(kind):
    ids, mask = text_batch(batch=2, length=8)
    mask[:] = 1
    changed = _later_tokens_changed(ids, mask, 5)
    for mode, leaks in [("causal", False), ("epalm", True)]:
        model = tiny_model(kind, injection_mode=mode, start_layer_idx=1, end_layer_idx=3)
        x = images(2)
        with torch.no_grad():
            a = model(ids, mask, media=x).logits[:, :5]
            b = model(changed, mask, media=x).logits[:, :5]
        if leaks:
            assert not torch.allclose(a, b), "epalm mode should let earlier logits see later text (reference)"
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_blind_model_padding_and_slot_are_invisible():
    """A prompt-only model's text logits do not depend on the padding side; a visual model's first layers
    (before injection) do not see the slot: its text logits equal the blind model's up to that layer."""
    model = tiny_model("llama", visual=False)
    ids, mask = text_batch(batch=3, length=6)
    with torch.no_grad():
        logits = model(ids, mask).logits
        for row in range(ids.shape[0]):
            n = int(mask[row].sum())
            single = model(ids[row : row + 1, :n], mask[row : row + 1, :n]).logits
            torch.testing.assert_close(logits[row, :n], single[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["opt", "llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_cached_generation_equals_recomputation(kind, num_beams, padded):
    """Unpadded: generate() drops the all-ones mask, so the hooks must read the past length from the cache."""
    model = tiny_model(kind, injection_mode="causal")
    ids, mask = text_batch(batch=3, length=5, left_pad=True)
    if not padded:
        ids, mask = ids[:, -2:], mask[:, -2:]
        assert bool(mask.all())
    x = images(3)
    kwargs = dict(media=x, max_new_tokens=8, num_beams=num_beams, min_new_tokens=8)
    cached = model.generate(ids, mask, use_cache=True, **kwargs)
    recomputed = model.generate(ids, mask, use_cache=False, **kwargs)
    assert cached.shape == (3, 8)
    assert torch.equal(cached, recomputed)


def test_greedy_generation_follows_the_forward_logits():
    """Generation and the training forward compute the same function (causal mode): each greedy token
    is the argmax of the forward pass over the text generated so far."""
    model = tiny_model("opt")
    ids, mask = text_batch(batch=2, length=4, left_pad=True)
    x = images(2)
    new = model.generate(ids, mask, media=x, max_new_tokens=5, min_new_tokens=5)
    full = torch.cat([ids, new], 1)
    full_mask = torch.cat([mask, torch.ones_like(new)], 1)
    with torch.no_grad():
        logits = model(full, full_mask, media=x).logits
    predicted = logits[:, ids.shape[1] - 1 : -1].argmax(-1)
    assert torch.equal(predicted, new)


def test_epalm_mode_refuses_the_kv_cache_and_generates_by_recomputation():
    model = tiny_model("opt", injection_mode="epalm")
    ids, mask = text_batch(batch=2, length=4, left_pad=True)
    with pytest.raises(ValueError, match="KV cache"):
        model.generate(ids, mask, media=images(2), use_cache=True)
    out = model.generate(ids, mask, media=images(2), max_new_tokens=4, num_beams=2)
    assert out.shape[0] == 2 and out.shape[1] <= 4
