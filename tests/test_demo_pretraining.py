"""The demo's shipped unimodal pretrained models (models/demo_weights) and the code that builds them."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from epalm.demo.pretraining import (DEFAULT_OUT, LMSettings, TokenizerSettings, ViTSettings, demo_encoder_config,
                                       demo_lm_config, ensure_demo_models)
from epalm.demo.pretraining.__main__ import main
from epalm.demo.pretraining.build import FOLDERS
from epalm.demo.pretraining.images import render_pool, sample_images
from epalm.demo.pretraining.lm import answer_tokens, weighted_lm_loss
from epalm.demo.pretraining.lm_evaluation import generate, generated_caption, held_out_questions, well_formed_for
from epalm.demo.pretraining.settings import REPORT_FILE, TOKENIZER_DIR, VIT_DIR, VIT_WEIGHTS_FILE
from epalm.demo.pretraining.vit import normalize
from epalm.demo.synthetic.text_corpus import ANSWER_SEP, CONTEXT_SEP, EOS
from epalm.demo.synthetic.worlds import discover_worlds
from epalm.models.encoders import build_encoder
from epalm.models.language_models.frozen_lm import build_language_model
from epalm.models.language_models.tokenizer import load_tokenizer

SHIPPED_TOKENIZER = DEFAULT_OUT / TOKENIZER_DIR
MAX_FILE_BYTES = 5 * 1024 * 1024


def _report(folder: str) -> dict:
    return json.loads((DEFAULT_OUT / folder / REPORT_FILE).read_text())


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(SHIPPED_TOKENIZER)


@pytest.fixture(scope="module")
def shipped_lm():
    config = demo_lm_config()
    tok = load_tokenizer(config.name)
    return build_language_model(config, tok), tok


@pytest.fixture(scope="module")
def shipped_vit():
    return build_encoder(demo_encoder_config())


# ---------------------------------------------------------------- the shipped tokenizer


def test_tokenizer_round_trips_text_and_prepends_bos(tokenizer):
    text = "two red circles on the left . how many shapes are there?"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.bos_token == tokenizer.eos_token == EOS  # as OPT
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.unk_token_id not in ids
    # Characters the corpus never shows still decode back (the alphabet is all printable ASCII).
    odd = "Zebra #42 {x}"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd


def test_answer_separator_is_one_special_token(tokenizer):
    ids = tokenizer("is there a circle?" + ANSWER_SEP + "yes" + EOS, add_special_tokens=False)["input_ids"]
    separator = tokenizer.convert_tokens_to_ids(ANSWER_SEP)
    assert ids.count(separator) == 1 and ids[-1] == tokenizer.eos_token_id
    assert tokenizer(ANSWER_SEP, add_special_tokens=False)["input_ids"] == [separator]
    assert ANSWER_SEP in tokenizer.all_special_tokens
    # load_tokenizer finds `</a>` already there and adds nothing.
    assert len(load_tokenizer(str(SHIPPED_TOKENIZER))) == len(tokenizer)


@pytest.mark.parametrize("word", ["red", "two", "how", "circle", "low", "square"])
def test_a_word_tokenizes_the_same_after_bos_after_context_and_after_a_special_token(tokenizer, word):
    alone = tokenizer(word, add_special_tokens=False)["input_ids"]
    after_bos = tokenizer(word)["input_ids"][1:]
    after_context = tokenizer("the image" + CONTEXT_SEP + word, add_special_tokens=False)["input_ids"]
    after_separator = tokenizer("which colour?" + ANSWER_SEP + word, add_special_tokens=False)["input_ids"]
    after_eos = tokenizer("no" + EOS + word, add_special_tokens=False)["input_ids"]
    assert after_bos == alone
    assert after_context[-len(alone):] == alone
    assert after_separator[-len(alone):] == alone
    assert after_eos[-len(alone):] == alone


def test_shipped_tokenizer_knows_every_registered_world():
    built_from = _report(TOKENIZER_DIR)["worlds"]
    assert built_from == discover_worlds(), "rebuild with: python -m epalm.demo.pretraining --force"


# ---------------------------------------------------------------- the shipped LM


def test_shipped_lm_loads_through_the_project_loaders_without_resizing(shipped_lm):
    lm, tok = shipped_lm
    assert lm.model.config.model_type == "opt"
    assert lm.model.get_input_embeddings().num_embeddings == len(tok)  # no new row for `</a>`
    assert lm.model.config.bos_token_id == lm.model.config.eos_token_id == tok.eos_token_id
    assert lm.num_layers == _report(FOLDERS["lm"])["settings"]["num_layers"]


def test_shipped_lm_answers_from_its_context_and_not_without_it(shipped_lm):
    lm, tok = shipped_lm
    items = held_out_questions(seed=12345, scenes_per_world=4, worlds=discover_worlds())
    with_caption = generate(lm.model, tok, [i.prompt("caption") for i in items], 8, progress=False)
    blind = generate(lm.model, tok, [i.prompt("blind") for i in items], 8, progress=False)
    caption_accuracy = sum(p == i.answer for p, i in zip(with_caption, items)) / len(items)
    blind_accuracy = sum(p == i.answer for p, i in zip(blind, items)) / len(items)
    assert caption_accuracy >= 0.9, caption_accuracy
    assert blind_accuracy < caption_accuracy - 0.25, (blind_accuracy, caption_accuracy)


def test_shipped_lm_writes_a_well_formed_caption_from_bos(shipped_lm):
    lm, tok = shipped_lm
    caption = generate(lm.model, tok, [""], 48, progress=False)[0]
    assert well_formed_for(generated_caption(caption), discover_worlds()), caption


def test_shipped_files_are_small_and_reports_exist():
    files = [p for p in DEFAULT_OUT.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert path.stat().st_size < MAX_FILE_BYTES, path
    for folder in FOLDERS.values():
        assert (DEFAULT_OUT / folder / REPORT_FILE).is_file()
    assert not list(DEFAULT_OUT.glob(".*tmp*")), "an interrupted build left a temporary folder"


# ---------------------------------------------------------------- the shipped ViT


def test_shipped_vit_loads_through_build_encoder_with_its_weights(shipped_vit):
    saved = load_file(str(DEFAULT_OUT / VIT_DIR / VIT_WEIGHTS_FILE))
    loaded = shipped_vit.model.state_dict()
    assert set(saved) == set(loaded)  # nothing silently skipped by timm's non-strict load
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    assert shipped_vit.image_size == 48
    pixels = torch.zeros(2, 3, 48, 48)
    assert shipped_vit(pixels, 2).shape == (2, 2, shipped_vit.hidden_size)


def test_vit_pretraining_pixels_equal_the_encoders_test_preprocessing(shipped_vit):
    pool = render_pool(seed=7, split="test", n=6, progress=False)
    images = sample_images(seed=7, split="test", n=6)
    reference = torch.stack([shipped_vit.preprocessing(False)(image) for image in images])
    torch.testing.assert_close(normalize(shipped_vit, pool.pixels), reference, rtol=0, atol=1e-6)
    report = _report(VIT_DIR)
    assert report["pixel_mean"] == list(shipped_vit.mean) and report["pixel_std"] == list(shipped_vit.std)


def test_shipped_vit_features_separate_the_attributes_linearly(shipped_vit):
    """Nearest class mean on the frozen last CLS (a linear rule), fitted and scored on fresh images."""
    train = render_pool(seed=21, split="train", n=240, progress=False)
    test = render_pool(seed=21, split="test", n=120, progress=False)
    with torch.no_grad():
        f_train = shipped_vit(normalize(shipped_vit, train.pixels), 1)[:, 0]
        f_test = shipped_vit(normalize(shipped_vit, test.pixels), 1)[:, 0]
    for attribute, labels in train.labels.items():
        means = torch.stack([f_train[labels == k].mean(0) for k in range(len(train.classes[attribute]))])
        predicted = torch.cdist(f_test, means).argmin(-1)
        accuracy = (predicted == test.labels[attribute]).float().mean().item()
        assert accuracy >= 0.9, (attribute, accuracy)


# ---------------------------------------------------------------- the LM's loss


def test_answer_tokens_are_those_after_the_separator_up_to_their_eos(tokenizer):
    text = "a red circle . what colour are the shapes?</a>red</s>is there a square?</a>no</s>"
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    marked = answer_tokens(ids, tokenizer.convert_tokens_to_ids(ANSWER_SEP), tokenizer.eos_token_id)[0]
    tokens = tokenizer.convert_ids_to_tokens(ids[0][marked])
    assert tokens == ["▁red", EOS, "▁no", EOS]


def test_weighted_loss_with_weight_one_is_the_usual_causal_lm_loss():
    torch.manual_seed(0)
    ids = torch.tensor([[1, 10, 11, 3, 20, 1, 0], [1, 12, 3, 21, 22, 1, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    logits = torch.randn(2, 7, 30)
    labels = ids.masked_fill(ids == 0, -100)
    usual = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
    torch.testing.assert_close(weighted_lm_loss(logits, batch, 3, 1, 1.0), usual)
    assert weighted_lm_loss(logits, batch, 3, 1, 5.0) != usual


# ---------------------------------------------------------------- the build code path (tiny, not quality)

TINY = dict(
    tokenizer_settings=TokenizerSettings(n_documents=300),
    lm_settings=LMSettings(hidden_size=16, num_layers=2, num_heads=2, ffn_dim=32, steps=2, batch_size=4,
                           warmup_steps=1, eval_scenes_per_world=1, eval_samples=2),
    vit_settings=ViTSettings(model_kwargs=dict(img_size=48, patch_size=16, embed_dim=16, depth=2, num_heads=2),
                             n_train_images=24, n_test_images=12, steps=2, batch_size=8, warmup_steps=1,
                             probe_train_images=24),
)


TEXT_AND_IMAGE = ("tokenizer", "lm", "vit")  # the TimeSformer and AST builds: tests/test_demo_media_encoders.py


def test_build_writes_loadable_models_and_then_builds_only_what_is_missing(tmp_path):
    out = tmp_path / "weights"
    models = ensure_demo_models(out, only=TEXT_AND_IMAGE, seed=5, progress=False, **TINY)
    assert models.built == ("tokenizer", "lm", "vit")
    assert not list(out.glob(".*")), "temporary folders left behind"
    lm_report = models.report("lm")
    assert set(lm_report["evaluation"]["qa_accuracy"]) == {"caption", "keywords", "blind"}
    assert lm_report["worlds"] == discover_worlds()
    vit_report = models.report("vit")
    assert set(vit_report["linear_probe_accuracy"]) == {"last", "last-1"}
    assert vit_report["preprocessing_max_abs_difference"] <= 1e-6

    tok = load_tokenizer(str(models.lm))
    lm = build_language_model(demo_lm_config(out), tok)
    assert lm.model.get_input_embeddings().num_embeddings == len(tok)
    vit = build_encoder(demo_encoder_config(out))
    assert vit.hidden_size == 16

    stamp = (models.vit / VIT_WEIGHTS_FILE).stat().st_mtime_ns
    again = ensure_demo_models(out, only=TEXT_AND_IMAGE, seed=5, progress=False, **TINY)
    assert again.built == ()
    forced = ensure_demo_models(out, only=["vit"], seed=5, force=True, progress=False, **TINY)
    assert forced.built == ("vit",)
    assert (models.vit / VIT_WEIGHTS_FILE).stat().st_mtime_ns != stamp
    # Same seed, same settings: the same weights.
    rebuilt = build_encoder(demo_encoder_config(out)).model.state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in vit.model.state_dict().items())


def test_lm_alone_builds_its_missing_tokenizer_and_cli_rejects_unknown_parts(tmp_path):
    out = tmp_path / "weights"
    models = ensure_demo_models(out, only=["lm"], seed=1, progress=False, **TINY)
    assert models.built == ("tokenizer", "lm")
    assert not models.vit.exists()
    with pytest.raises(ValueError, match="unknown demo model"):
        ensure_demo_models(out, only=["gpt"], progress=False)
    with pytest.raises(SystemExit):
        main(["--only", "gpt", "--out", str(out)])


def test_cli_reports_what_is_already_built(tmp_path, capsys):
    out = tmp_path / "weights"
    ensure_demo_models(out, only=["tokenizer"], seed=1, progress=False, **TINY)
    main(["--only", "tokenizer", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "already present" in printed and "tokens from worlds" in printed
