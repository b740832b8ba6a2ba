"""Chat-message rows: the reader's checks, the templates, the collator's placeholder expansion, and a run
that trains and evaluates on rows holding two images each (layer injection and the prefix connector)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from epalm.common.errors import DataFormatError
from epalm.dataset.chat_collate import ChatCollator
from epalm.dataset.chat_template import chat_segments
from epalm.dataset.records import MediaItem
from epalm.dataset.tasks import TASK_READERS
from epalm.models.language_models.tokenizer import load_tokenizer
from epalm.models.media_instances import instance_order
import epalm.training.run as entry
from tests.tiny_run import build_tiny_setup, tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def tokenizer(setup):
    return load_tokenizer(str(setup["tokenizer"]))


def _row(uid, images, question, answer, **extra):
    return {"id": uid, "images": images, "messages": [{"role": "user", "content": question},
                                                      {"role": "assistant", "content": answer}], **extra}


def _write(folder: Path, split: str, rows: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.jsonl"
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_reader_keeps_instances_in_placeholder_order(tmp_path):
    rows = [{"id": 7, "images": ["a.jpg", "b.jpg"], "audios": ["c.wav"],
             "messages": [{"role": "system", "content": "look at <image>"},
                          {"role": "user", "content": "is <audio> about <image>?"},
                          {"role": "assistant", "content": "yes"}], "meta": {"question_type": "pair"}}]
    _write(tmp_path, "train", rows)
    split = TASK_READERS.build("chat", tmp_path, "train")
    sample = split[0]
    assert split.kind == "chat" and split.modality == "audio+image"
    assert sample.items == [MediaItem("image", "a.jpg"), MediaItem("audio", "c.wav"), MediaItem("image", "b.jpg")]
    assert sample.targets == ["yes"] and sample.prompt == "is <audio> about <image>?"
    assert sample.meta == {"question_type": "pair"}


@pytest.mark.parametrize("row, message", [
    (_row(1, ["a.jpg"], "<image> and <image>?", "no"), r"placeholder <image> number 2 has no file: 'images' lists 1"),
    (_row(1, ["a.jpg", "b.jpg"], "<image>?", "no"), r"'images' lists 2 file\(s\) but the messages hold 1"),
    (_row(1, ["a.jpg"], "<image>?", "no", imagez=["x"]), r"unknown key 'imagez' \(did you mean `images`\?\)"),
    (_row(1, ["a.jpg"], "<image>?", "it is <image>"), r"assistant\) holds the placeholder"),
    ({"id": 1, "messages": [{"role": "user", "content": "hi"}]}, r"last message must be the assistant's"),
    ({"id": 1, "messages": [{"role": "robot", "content": "hi"}]}, r"role 'robot'"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, r"missing field 'id'"),
    ("{not json", r"line 1: not valid JSON"),
])
def test_reader_rejects_bad_rows_naming_file_and_line(tmp_path, row, message):
    path = _write(tmp_path, "train", [row])
    with pytest.raises(DataFormatError, match=message) as error:
        TASK_READERS.build("chat", tmp_path, "train")
    assert f"{path}: line 1" in str(error.value)


def test_plain_template_supervises_assistant_turns_only(tokenizer):
    messages = [{"role": "user", "content": "colour ?"}, {"role": "assistant", "content": "red"},
                {"role": "user", "content": "shape ?"}, {"role": "assistant", "content": "circle"}]
    assert chat_segments(messages, tokenizer, "plain", for_generation=False) == [
        ("colour ?</a>", False), ("red</s>", True), ("shape ?</a>", False), ("circle</s>", True)]
    assert chat_segments(messages, tokenizer, "auto", for_generation=True) == [
        ("colour ?</a>", False), ("red</s>", True), ("shape ?</a>", False)]


def test_tokenizer_chat_template_is_used_when_present(tokenizer):
    templated = load_tokenizer(tokenizer.name_or_path)
    templated.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
                               "{% if add_generation_prompt %}assistant : {% endif %}")
    messages = [{"role": "user", "content": "colour ?"}, {"role": "assistant", "content": "red"}]
    assert chat_segments(messages, templated, "auto", for_generation=False) == [
        ("user : colour ? ; assistant : ", False), ("red ; ", True)]
    assert chat_segments(messages, templated, "auto", for_generation=True) == [("user : colour ? ; assistant : ", False)]


def _item(index, messages, modalities, width=3):
    instances = [{"modality": m, "features": torch.full((1, width), float(10 * index + k))}
                 for k, m in enumerate(modalities)]
    return {"index": index, "uid": index, "prompt": "", "target": None, "skipped": None, "messages": messages,
            "instances": instances}


@pytest.mark.parametrize("width", [1, 2])
def test_collator_expands_each_placeholder_into_its_instance_rows(tokenizer, width):
    collate = ChatCollator(tokenizer, train=True, tokens_per_instance=width, template="plain")
    first = [{"role": "user", "content": "is <image> like <audio> ?"}, {"role": "assistant", "content": "yes"}]
    second = [{"role": "user", "content": "<image> <image> same ?"}, {"role": "assistant", "content": "no"}]
    batch = collate([_item(0, first, ["image", "audio"]), _item(1, second, ["image", "image"])])
    stacks = batch["features"]
    assert set(stacks) == {"image", "audio"} and stacks["image"].shape[0] == 3 and stacks["audio"].shape[0] == 1
    order = [row for m in instance_order(stacks) for row in stacks[m]]  # the model's instance numbering
    index, labels, ids = batch["media_index"], batch["labels"], batch["input_ids"]
    for b, expected in enumerate([[0.0, 1.0], [10.0, 11.0]]):  # each row's instances, in placeholder order
        rows = [int(v) for v in index[b] if v >= 0]
        assert len(rows) == 2 * width
        instances = [rows[k * width] // width for k in range(2)]
        assert [float(order[i][0, 0]) for i in instances] == expected
        assert all(rows[k * width + j] == instances[k] * width + j for k in range(2) for j in range(width))
        assert (labels[b][index[b] >= 0] == -100).all() and (ids[b][index[b] >= 0] == tokenizer.pad_token_id).all()
    answer = tokenizer("yes", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert [int(t) for t in labels[0] if t != -100] == answer  # the assistant turn alone is supervised
    blind = ChatCollator(tokenizer, train=False, tokens_per_instance=0, template="plain")(
        [_item(0, first, ["image", "audio"])])
    assert "features" not in blind and (blind["media_index"] < 0).all()
    first_only = ChatCollator(tokenizer, train=True, tokens_per_instance=width, template="plain",
                              max_instances=1)([_item(0, first, ["image", "audio"])])
    assert set(first_only["features"]) == {"image"} and int((first_only["media_index"] >= 0).sum()) == width


def _pair_rows(data: Path, split: str, count: int, seed: int) -> list:
    """Rows asking whether two synthetic images show the same colour, from the VQA colour answers."""
    entries = json.loads((data / "vqa" / f"karpathy_{split}.json").read_text())
    colours = {}
    for entry in entries:
        if entry.get("question_type") == "colour":
            colours[entry["img_id"]] = next(iter(entry["label"]))
    ids = sorted(colours)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(count):
        a, b = (ids[int(i)] for i in torch.randint(0, len(ids), (2,), generator=g))
        folder = "train2014" if "train" in a else "val2014"
        rows.append(_row(f"{split}{k}", [f"{folder}/{a}.jpg", f"{folder}/{b}.jpg"],
                         "do <image> and <image> have the same colour ?",
                         "yes" if colours[a] == colours[b] else "no", meta={"question_type": "same_colour"}))
    return rows


@pytest.mark.parametrize("connector", ["linear", "prefix"])
def test_main_trains_and_evaluates_on_two_image_rows(setup, tmp_path, connector):
    data = setup["data"]
    chat = tmp_path / "chat"
    _write(chat, "train", _pair_rows(data, "train", 24, 0))
    test_rows = _pair_rows(data, "test", 6, 1)
    test_rows[0]["images"][1] = "train2014/missing.jpg"  # reported and skipped, never a crash
    _write(chat, "test", test_rows)
    config = tiny_config(setup, tmp_path / "c.yaml", max_steps=3)
    extra = ["--set", "model.connector=prefix", "--set", "model.injected_hidden_states=1"] if connector == "prefix" else []
    result = entry.main(["--config", str(config), "--output_dir", str(tmp_path / "run"),
                         "--set", "task.reader=chat", "--set", f"task.data_dir={chat}",
                         "--set", f"task.media_root={data / 'COCO' / 'images'}", "--set", "task.train_split=train",
                         "--set", "task.val_split=", "--set", "task.test_split=test", *extra])
    test = result["test"]
    assert test["num_samples"] == 6 and test["num_predictions"] == 5 and test["num_skipped_media"] == 1
    assert test["main"]["name"] == "exact_match" and "same_colour" in test["per_question_type"]
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "trainable" / "model.safetensors"))
    assert any(key.startswith("connectors.image.") for key in weights)
    predictions = json.loads((tmp_path / "run" / "eval" / "test_predictions.json").read_text())
    assert {row["id"] for row in predictions} == {f"test{k}" for k in range(1, 6)}
