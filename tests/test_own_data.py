"""A newcomer's own data, end to end: the README's "Your own data" walk-through run as written (from another folder)
on real photographs of every kind, and each row of issue 20's table: every image missing, skipped media, a tiny
data set's checkpoints / logs / validations, --save_best without validation, the metric and why, squashed images."""
from __future__ import annotations

import base64
import importlib
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import epalm.training.run as entry
from epalm.common.command_line import run_command
from epalm.dataset.tasks import TASK_READERS
from tests.own_data import CATALOGUE, build_photos, write_caption_data, write_vqa_data

REPO = Path(__file__).resolve().parent.parent
CAPTION_CONFIG = str(REPO / "configs" / "demo" / "image_caption.yaml")
VQA_CONFIG = str(REPO / "configs" / "demo" / "image_vqa.yaml")
TEST_FILES = [file for file, split, *_ in CATALOGUE.values() if split == "test"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return build_photos(tmp_path_factory.mktemp("own"))


@pytest.fixture
def mydata(photos, tmp_path, monkeypatch, one_torch_thread):
    """The caption data set in a fresh folder, which is also the current folder (outputs and caches land here)."""
    monkeypatch.chdir(tmp_path)
    return write_caption_data(tmp_path / "mydata", photos)


def readme_walkthrough() -> tuple[dict, list[list[str]]]:
    """The README section's example `dataset_coco.json` and its commands, one argv each."""
    section = (REPO / "README.md").read_text().split("## Your own data\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    example = json.loads(next(body for language, body in blocks if language == "json"))
    commands = next(body for _, body in blocks if "check_data" in body).replace("\\\n", " ")
    return example, [shlex.split(line) for line in commands.splitlines() if line.strip()]


def run_typed(argv: list[str]):
    """A README line `python main.py ...` / `python -m module ...`, in this process."""
    assert argv[0] == "python"
    if argv[1] == "-m":
        return importlib.import_module(argv[2]).main(argv[3:])
    assert argv[1] == "main.py"
    commands = {"predict": "epalm.inference.predict", "check-data": "epalm.training.check_data"}
    if argv[2] in commands:
        return importlib.import_module(commands[argv[2]]).main(argv[3:])
    return entry.main(argv[2:])


def console_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    return (captured.out + captured.err).splitlines()


def test_the_readme_walkthrough_runs_as_written(mydata, capsys):
    example, commands = readme_walkthrough()
    assert [c[:3] for c in commands] == [["python", "-m", "epalm.training.check_data"], ["python", "main.py", "--config"],
                                         ["python", "main.py", "--config"], ["python", "main.py", "predict"]]
    # The example annotation file is read as the README says (files found by the names written).
    (mydata.parent / "example" / "COCO" / "images").mkdir(parents=True)
    for image in example["images"]:
        shutil.copy(mydata / "COCO" / "images" / "cat.png", mydata.parent / "example" / "COCO" / "images" /
                    image["filename"])
    (mydata.parent / "example" / "COCO" / "dataset_coco.json").write_text(json.dumps(example))
    assert [s.media for s in TASK_READERS.build("coco_caption", mydata.parent / "example", "train")] == \
        ["beach.jpg", "cat.png"]
    # The commands, run from this folder (not the repository's): only the config path and the step count differ.
    results = []
    for argv in commands:
        argv = [str(REPO / a) if a.startswith("configs/") else a for a in argv]
        results.append(run_typed([a.replace("train.max_steps=100", "train.max_steps=6") for a in argv]))
    out = "\n".join(console_lines(capsys))
    assert "ok: every split can be used" in out and "media: 4 files, all readable" in out
    assert "rocket_strip.jpg 2000x50" in out  # the squashed strip is named
    trained, evaluated, predicted = results[1]["test"], results[2]["test"], results[3]
    assert trained["num_predictions"] == trained["num_samples"] == 4 and trained["num_skipped_media"] == 0
    assert evaluated["scores"] == trained["scores"]
    assert json.loads(Path("outputs/mydata_eval/eval/test_predictions.json").read_text()) == json.loads(
        Path("outputs/mydata/eval/test_predictions.json").read_text())
    assert isinstance(predicted["answer"], str) and predicted["media"][0]["path"].endswith("phone.jpg")
    # The page shows every test photograph as it looks: the 16-bit moon is not a white square, the phone photo is
    # upright (landscape), in the test split's order.
    page = Path("outputs/mydata/eval/test.html").read_text()
    thumbnails = [Image.open(io.BytesIO(base64.b64decode(uri))) for uri in re.findall(r'base64,([^"]+)"', page)]
    assert len(thumbnails) == len(TEST_FILES) == 4
    moon16, moon8, _, phone = thumbnails
    assert abs(np.asarray(moon16.convert("L")).mean() - np.asarray(moon8.convert("L")).mean()) < 2
    assert phone.width > phone.height
    assert Path(".cache/features").is_dir()  # the feature cache: under the current folder, not the repository


def test_every_image_missing_is_one_error_before_training(mydata, capsys):
    """Today: every file missing trains with loss 0.0, reports `value: None` and exits 0."""
    shutil.rmtree(mydata / "COCO" / "images")
    status = run_command(entry.main, ["--config", CAPTION_CONFIG, "--data_dir", str(mydata), "--output_dir", "run"])
    errors = [line for line in console_lines(capsys) if line.startswith("error:")]
    assert status == 2 and len(errors) == 1
    assert errors[0].startswith("error: coco_caption train: no usable training sample: 8 of 8 media files cannot "
                                "be read (missing 8)")
    assert "mydata/COCO/images/astronaut.png: file not found" in errors[0]  # the first paths, the reason
    assert "<filename>` as written" in errors[0]  # and what was looked for
    assert not Path("run/checkpoints").exists()  # before training


def test_unreadable_media_are_named_at_the_start_and_in_evaluation(mydata, capsys, recwarn):
    images = mydata / "COCO" / "images"
    (images / "rocket.jpg").unlink()  # a training file missing
    whole = (images / "phone.jpg").read_bytes()
    (images / "phone.jpg").write_bytes(whole[: len(whole) // 2])  # a test file truncated after its header
    result = entry.main(["--config", CAPTION_CONFIG, "--data_dir", str(mydata), "--output_dir", "run",
                         "--set", "train.max_steps=2"])
    lines = console_lines(capsys)
    start = [line for line in lines if "rocket.jpg: file not found" in line]
    assert len(start) == 1 and start[0].startswith("warning: coco_caption train: 1 of 8 media files cannot be read")
    assert "1 training sample(s) left out" in start[0]
    cache = [line for line in lines if line.startswith("feature cache") and "could not be read" in line]
    assert cache and "phone.jpg: not a decodable image" in cache[0]  # the cache no longer counts it as read
    skipped = [line for line in lines if "samples have no prediction" in line]
    assert len(skipped) == 1 and skipped[0].startswith("test: 1 of 4 samples") and "phone.jpg" in skipped[0]
    assert result["test"]["num_skipped_media"] == 1
    assert not [w for w in recwarn if "ground-truth ids" in str(w.message)]  # the console line instead


def test_a_tiny_data_set_logs_checkpoints_and_validates_a_bounded_number_of_times(photos, tmp_path, monkeypatch,
                                                                                   capsys, caplog, one_torch_thread):
    """Today, at one step an epoch: `last` rewritten 100 times with accelerate's INFO block, 303 evaluation files,
    a 2-point loss curve. (Questions: exact match scores in milliseconds, where METEOR starts Java each time.)"""
    monkeypatch.chdir(tmp_path)
    data = write_vqa_data(tmp_path / "myvqa", photos)
    caplog.set_level("INFO")
    entry.main(["--config", VQA_CONFIG, "--data_dir", str(data), "--output_dir", "run", "--set", "train.max_steps=100",
                "--set", "task.train_split=train", "--set", "task.val_split=test", "--set", "task.test_split=test",
                "--save_best"])
    lines = console_lines(capsys)
    checkpoints = [line for line in lines if line.startswith("checkpoint: ")]
    assert len(checkpoints) == 10 and checkpoints[-1].startswith("checkpoint: step 100, epoch 100 -> ")
    assert not [r for r in caplog.records if r.name.startswith("accelerate") and r.levelname == "INFO"]
    losses = [r for r in map(json.loads, Path("run/train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 50
    assert len(list(Path("run/eval").iterdir())) == 3 * 10 + 3  # ten validations (each 3 files) and the test
    # Each split's non-square images are counted once, though the test split also validates ten times.
    assert [line.split(":")[0] for line in lines if "not square" in line] == ["vqa_v2 train", "vqa_v2 test"]


def test_save_best_without_a_validation_split_is_an_error_naming_the_key(mydata, capsys):
    status = run_command(entry.main, ["--config", CAPTION_CONFIG, "--data_dir", str(mydata), "--output_dir", "run",
                                      "--save_best"])
    errors = [line for line in console_lines(capsys) if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "set task.val_split" in errors[0]


def test_png_questions_are_read_and_the_metric_says_why(photos, tmp_path, monkeypatch, capsys, one_torch_thread):
    """VQA questions on PNG files named by `img_id` without an extension; no human `answers`: exact match, said."""
    monkeypatch.chdir(tmp_path)
    data = write_vqa_data(tmp_path / "myvqa", photos)
    splits = ["--set", "task.train_split=train", "--set", "task.test_split=test"]
    result = entry.main(["--config", VQA_CONFIG, "--data_dir", str(data), "--output_dir", "run",
                         "--set", "train.max_steps=2", *splits])
    lines = console_lines(capsys)
    assert result["test"]["num_skipped_media"] == 0 and result["test"]["num_predictions"] == 8
    assert "vqa_v2 test: metric exact_match (VQA accuracy needs each question's 10 human `answers`" in "\n".join(lines)
    assert result["test"]["main"]["name"] == "exact_match" and "answers" in result["test"]["metric_reason"]
    for split in ("train", "test"):  # with ten human answers each, the official accuracy, said
        path = data / "vqa" / f"{split}.json"
        path.write_text(json.dumps([{**q, "answers": [q["answer"]] * 10} for q in json.loads(path.read_text())]))
    assert run_command(importlib.import_module("epalm.training.check_data").main,
                       [str(data), "--config", VQA_CONFIG, *splits]) == 0
    assert "metric: vqa_accuracy (VQA accuracy: every question has its human `answers`)" in "\n".join(
        console_lines(capsys))


def test_no_sample_left_after_filtering_is_one_error_saying_why(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_vqa_data(tmp_path / "myvqa", photos)
    path = data / "vqa" / "train.json"
    path.write_text(json.dumps([{k: v for k, v in q.items() if k != "answer"} for q in json.loads(path.read_text())]))
    argv = ["--config", VQA_CONFIG, "--data_dir", str(data), "--output_dir", "run", "--set", "task.train_split=train",
            "--set", "task.test_split=test"]
    assert run_command(entry.main, argv) == 2
    errors = [line for line in console_lines(capsys) if line.startswith("error:")]
    assert len(errors) == 1 and "none of its 16 samples has a target to train on" in errors[0]
