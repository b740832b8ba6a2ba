"""The sequence connector (`mlp`, LLaVA-1.5's projector) over patch tokens: its shapes and keys, the patch readout
of block -K, N positions per instance, and several modalities with different positions per instance in one prompt
(chat rows), with the KV cache."""
from __future__ import annotations

import pytest
import torch

from epalm.common.errors import ConfigError
from epalm.dataset.chat_collate import ChatCollator
from epalm.models.checkpoint import load_checkpoint, save_checkpoint
from epalm.models.encoders.config import EncoderConfig
from tests.tiny_models import TINY_VIT, images, text_batch, tiny_model
from tests.test_encoders import AST_ARCH, AST_FRAMES, AST_MELS


def test_the_projector_maps_every_patch_token_of_block_minus_k():
    model = tiny_model("opt", connector="mlp", readout="patches", injected_hidden_states=2)
    vit = model.encoder_for().model
    x = images(3)
    outputs = []
    hook = vit.blocks[-2].register_forward_hook(lambda module, inputs, output: outputs.append(output))
    with torch.no_grad():
        vit(x)
        hook.remove()
        features = model.encode(x)
    assert features.shape == (3, 16, 48) and model.tokens_per_instance == 16  # a 4 x 4 grid of patches
    torch.testing.assert_close(features, outputs[0][:, vit.num_prefix_tokens:])  # block -2, as LLaVA reads it
    projector = model.connector_for()
    assert [type(m).__name__ for m in projector.mlp] == ["Linear", "GELU", "Linear"]
    assert set(model.trainable_state_dict()) >= {"connectors.image.mlp.0.weight", "connectors.image.mlp.2.weight"}
    tokens = model.connect(features)
    assert tokens.shape == (3, 16, model.lm.embedding_size)
    torch.testing.assert_close(tokens[:, 5], projector.mlp(features[:, 5]))  # one MLP, token by token
    ids, mask = text_batch()
    model(ids, mask, media=x).logits.sum().backward()
    assert all(p.grad is not None for p in projector.parameters())


def test_vector_mode_maps_one_vector_to_n_tokens_with_n_mlps(tmp_path):
    model = tiny_model("opt", connector="mlp", connector_options={"tokens": 3, "layers": 2}, readout="mean",
                       injected_hidden_states=1)
    assert model.tokens_per_instance == 3 and len(model.connector_for().mlps) == 3
    save_checkpoint(model, tmp_path / "ckpt")
    torch.manual_seed(0)
    loaded, _ = load_checkpoint(tmp_path / "ckpt", load_tokenizer_if_missing=False)
    ids, mask = text_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, media=images(3)).logits, model(ids, mask, media=images(3)).logits)
    with pytest.raises(ConfigError, match="maps ONE feature vector"):
        tiny_model("opt", connector="mlp", connector_options={"tokens": 3}, readout="patches")
    with pytest.raises(ConfigError, match="linear' injects one vector per encoder block"):
        tiny_model("opt", readout="patches")
    with pytest.raises(ConfigError, match="patch_tokens=5"):
        tiny_model("opt", connector="mlp", readout="patches", patch_tokens=5)


def _image_and_audio_model():
    audio = EncoderConfig(type="ast", audio_frames=AST_FRAMES, mel_bins=AST_MELS, model_kwargs=AST_ARCH)
    return tiny_model("llama", connector="mlp", readout="patches", injected_hidden_states=1,
                      encoders={"image": TINY_VIT, "audio": audio})


@pytest.mark.parametrize("num_beams", [1, 3])
def test_modalities_of_different_widths_in_one_prompt_with_the_kv_cache(num_beams):
    model = _image_and_audio_model()
    widths = model.positions_per_instance
    assert widths == {"image": 16, "audio": 15}  # a 4 x 4 grid; AST's 3 x 5

    class Words:  # a whitespace tokenizer over the LM's ids, enough for the collator
        pad_token_id, bos_token_id, eos_token_id, eos_token, chat_template = 1, 2, 2, "</s>", None

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[3 + (hash(w) % 90) for w in t.split()] for t in texts]}

    collator = ChatCollator(Words(), train=False, tokens_per_instance=widths, template="plain")
    audio = torch.randn(1, AST_FRAMES, AST_MELS)
    rows = [{"index": i, "uid": i, "prompt": "", "target": None, "skipped": None,
             "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": ""}],
             "instances": [{"modality": m, "media": t} for m, t in inst]}
            for i, (text, inst) in enumerate([
                ("look <image> then hear <audio> now", [("image", images(1, seed=1)[0]), ("audio", audio[0])]),
                ("only <image> here", [("image", images(1, seed=2)[0])])])]
    batch = collator(rows)
    index = batch["media_index"]
    assert (index >= 0).sum() == 16 + 15 + 16
    # rows: audio first (instance order), then the two images; every row used once
    assert sorted(index[index >= 0].tolist()) == list(range(15 + 2 * 16))
    kwargs = dict(media=batch["media"], media_index=index, max_new_tokens=5, num_beams=num_beams, min_new_tokens=5)
    cached = model.generate(batch["input_ids"], batch["attention_mask"], use_cache=True, **kwargs)
    assert torch.equal(cached, model.generate(batch["input_ids"], batch["attention_mask"], use_cache=False, **kwargs))


def test_the_feature_cache_key_holds_the_readout_the_pooled_count_and_the_dtype():
    # one identity for the runs' caches and the few-shot study's (whose own copy once lacked the dtype)
    from dataclasses import replace

    from epalm.dataset.feature_cache import encoder_identity
    from epalm.training.run_config import RunConfig

    section = RunConfig().model.encoders["image"]
    keys = [encoder_identity(section, readout, pooled) for readout, pooled in (("cls", None), ("patches", None),
                                                                               ("patches", 4))]
    assert keys[0] != keys[1] != keys[2] and "patch_tokens" not in keys[0]  # the keys of earlier caches unchanged
    assert encoder_identity(replace(section, dtype="float16"), "cls") != encoder_identity(section, "cls")
