"""Instruct LMs: QA and caption samples through the tokenizer's chat template (`task.text_format: chat`) for Mistral's
[INST], Llama 3's and Qwen2's templates, in training, evaluation, the chat REPL and the few-shot study's captions;
the reference format unchanged by default."""
from __future__ import annotations

import pytest
import torch
import yaml

from epalm.common.errors import ConfigError
from epalm.dataset.collate import TextCollator
from epalm.inference.chat_inputs import MediaReader, parse_message
from epalm.inference.checkpoint_source import load_model
from epalm.inference.conversation import ONE_INSTANCE, Conversation, GenerationSettings
from epalm.models.config import ModelConfig
from epalm.models.factory import build_model
from epalm.models.language_models.frozen_lm import LanguageModelConfig
from epalm.models.language_models.tokenizer import load_tokenizer
from epalm.studies.fewshot.caption_lm import CaptionLM
import epalm.training.run as entry
from tests.tiny_models import TINY_VIT
from tests.tiny_run import build_tiny_setup, tiny_config
from tests.tiny_tokenizers import STYLES, save_chat_tokenizer

TEMPLATE_MARKS = {"mistral": "[INST]", "llama3": "<|start_header_id|>user", "qwen2": "<|im_start|>user"}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat_tokenizers")
    for style in STYLES:
        save_chat_tokenizer(style, root / style)
    return {style: load_tokenizer(str(root / style)) for style in STYLES}


def _item(prompt: str, target: str | None) -> dict:
    return {"uid": 0, "index": 0, "skipped": None, "prompt": prompt, "target": target}


@pytest.mark.parametrize("style", list(STYLES))
def test_qa_and_caption_samples_are_one_turn_conversations(tokenizers, style):
    tokenizer = tokenizers[style]
    turns = [{"role": "user", "content": "what colour is it?"}, {"role": "assistant", "content": "red"}]
    rendered = tokenizer.apply_chat_template(turns, tokenize=False)
    prompt = tokenizer.apply_chat_template(turns[:1], tokenize=False, add_generation_prompt=True)
    train = TextCollator(tokenizer, "qa", train=True, prompt_template="{question}", text_format="chat")
    batch = train([_item("what colour is it?", "red")])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert ids.tolist() == tokenizer(rendered, add_special_tokens=False)["input_ids"]  # the template, nothing else
    answer = tokenizer.decode(ids[labels != -100])
    assert answer.strip().startswith("red") and answer.strip() != "red"  # the template's end of turn is learnt
    assert tokenizer.eos_token in answer
    evaluation = TextCollator(tokenizer, "qa", train=False, prompt_template="{question}", text_format="chat")
    assert evaluation([_item("what colour is it?", None)])["input_ids"][0].tolist() == \
        tokenizer(prompt, add_special_tokens=False)["input_ids"]  # ends with the generation prompt
    caption = TextCollator(tokenizer, "caption", train=False, text_format="chat", caption_prompt="Describe it.")
    text = tokenizer.decode(caption([_item("", None)])["input_ids"][0])
    assert TEMPLATE_MARKS[style] in text and "Describe it." in text
    reference = TextCollator(tokenizer, "qa", train=False)  # the default: the reference's text
    assert TEMPLATE_MARKS[style] not in tokenizer.decode(reference([_item("what colour is it?", None)])["input_ids"][0])


def test_the_chat_format_needs_a_template_and_a_known_name(tmp_path):
    from tests.tiny_run import build_word_tokenizer

    build_word_tokenizer(tmp_path)
    plain = load_tokenizer(str(tmp_path))
    with pytest.raises(ConfigError, match="has no chat template"):
        TextCollator(plain, "qa", train=False, text_format="chat")([_item("q", None)])
    with pytest.raises(ConfigError, match="task.text_format 'chats'"):
        TextCollator(plain, "qa", train=False, text_format="chats")


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tokenizers):
    """A tiny Llama with Llama 3's template trained 2 steps on VQA in the chat format, then evaluated."""
    root = tmp_path_factory.mktemp("chat_run")
    setup = build_tiny_setup(root)
    save_chat_tokenizer("llama3", root / "llama3")
    vocab = len(load_tokenizer(str(root / "llama3")))
    path = tiny_config(setup, root / "c.yaml", max_steps=2)
    config = yaml.safe_load(path.read_text())
    config["model"]["lm"] = {"name": "llama", "random_init": True, "tokenizer": str(root / "llama3"),
                             "config_overrides": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                                                  "num_attention_heads": 4, "num_key_value_heads": 2,
                                                  "vocab_size": vocab, "max_position_embeddings": 128}}
    config["task"].update(text_format="chat", prompt_template="{question}", val_split="", max_eval_samples=4)
    config["train"]["max_text_len"] = 96
    config["eval"]["max_length"] = 80
    path.write_text(yaml.safe_dump(config))
    result = entry.main(["--config", str(path), "--output_dir", str(root / "run")])
    return root, setup, result


def test_an_instruct_lm_trains_and_evaluates_in_the_chat_format(chat_run):
    root, _, result = chat_run
    assert result["steps"] == 2 and result["test"]["num_predictions"] == 4
    assert yaml.safe_load((root / "run" / "config.yaml").read_text())["task"]["text_format"] == "chat"


def test_the_chat_repl_reads_a_chat_format_model_through_its_template(chat_run):
    root, setup, _ = chat_run
    loaded = load_model(str(root / "run"))
    images = setup["data"] / "COCO" / "images"
    image = str(next(images.rglob("*.jpg")).relative_to(images))
    message = parse_message(f"<image:{image}> what colour is it?", images)
    reply = Conversation(loaded, GenerationSettings(1, 4)).ask(message, [MediaReader(loaded).read(r)
                                                                        for r in message.media])
    assert reply.layout == ONE_INSTANCE  # one medium, before the text, as it was trained
    text = loaded.tokenizer.decode(reply.batch["input_ids"][0])
    assert text.startswith("<|begin_of_text|><|start_header_id|>user") and "what colour is it?" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_few_shot_captions_use_the_template(tokenizers, tmp_path):
    save_chat_tokenizer("mistral", tmp_path)
    tokenizer = load_tokenizer(str(tmp_path))
    lm = LanguageModelConfig(name="llama", random_init=True, tokenizer=str(tmp_path), config_overrides={
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": len(tokenizer)})
    model, _ = build_model(ModelConfig(lm=lm, encoders={"image": TINY_VIT}, connector="prefix",
                                       connector_options={"tokens": 2}, injected_hidden_states=1, prompt_len=0),
                           tokenizer=tokenizer)
    captions = CaptionLM(model, tokenizer, text_format="chat", caption_prompt="Describe it.")
    batch = captions.batch(["a red circle"])
    assert tokenizer.decode(batch["input_ids"][0]).startswith("<s>[INST] Describe it. [/INST] a red circle</s>")
    tokens = torch.randn(2, 2, 32)
    assert captions.loss(["a red circle", "two blue squares"], tokens=tokens).isfinite()
    assert len(captions.captions(3, tokens=tokens)) == 2
