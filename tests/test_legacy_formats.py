"""What was written before `model.encoders` and the `epalm` package (format 1) keeps working: an old YAML config,
an old run folder's config.yaml and checkpoints, an old run's `--evaluate` and `--resume`, to the bit.

The files in tests/fixtures/format1_run were made by the code of 2026-11-27 (commit 819f6ec), as its
make_format1_run.py says: a tiny VQA run killed at step 4 of 8, and the same run uninterrupted."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from epalm.models.checkpoint import load_checkpoint, with_current_keys
from epalm.training.run_config import resolve_config
import epalm.training.run as entry
from tests.tiny_run import build_tiny_setup

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "format1_run"
MADE_IN = "/tmp/format1/out"  # where make_format1_run.py wrote them: the paths inside name it


@pytest.fixture(scope="module")
def old_runs(tmp_path_factory) -> Path:
    """The fixture's runs, their paths pointing here, beside the data and tokenizer they were trained on (the
    builders are seeded: the same files)."""
    root = tmp_path_factory.mktemp("format1")
    for item in FIXTURE.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, root / item.name)
    build_tiny_setup(root / "setup")
    for path in [*root.rglob("*.yaml"), *root.rglob("epalm_config.json")]:
        path.write_text(path.read_text().replace(MADE_IN, str(root)))
    return root


def test_old_yaml_keys_are_read_as_model_encoders_with_one_note(old_runs, capsys):
    for _ in range(2):
        cfg = resolve_config(["--config", str(old_runs / "config.yaml")])
    assert list(cfg.model.encoders) == ["image"]
    assert cfg.model.encoders["image"].type == "timm_vit" and cfg.model.encoders["image"].model_kwargs["depth"] == 3
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "model.encoders.{image}" in notes[0], notes


def test_an_old_key_over_a_new_section_merges_into_its_modality():
    cfg = resolve_config(["--config", "configs/demo/image_vqa.yaml", "--set", "model.encoder.normalization=clip",
                          "--vision_model", "vit_small_patch16_224"])
    assert list(cfg.model.encoders) == ["image"]
    image = cfg.model.encoders["image"]
    assert (image.normalization, image.name, image.model_kwargs["depth"]) == ("clip", "vit_small_patch16_224", 4)
    joint = resolve_config(["--config", "configs/demo/joint.yaml", "--set",
                            "model.extra_encoders={audio: {audio_frames: 320}}"])
    assert list(joint.model.encoders) == ["image", "video", "audio"]  # an extra one does not become the main one
    assert joint.model.encoders["audio"].audio_frames == 320 and joint.model.encoders["audio"].type == "ast"


def test_an_old_checkpoint_folder_loads_into_todays_model(old_runs):
    folder = old_runs / "whole" / "checkpoints" / "last" / "trainable"
    saved = load_file(str(folder / "model.safetensors"))
    assert "connector.0.weight" in saved  # format 1's name
    model, _ = load_checkpoint(folder, load_tokenizer_if_missing=False)
    assert list(model.encoders) == ["image"]
    assert torch.equal(model.connector_for("image")[0].weight, saved["connector.0.weight"])
    assert torch.equal(model.prompt_module.prefix_embedding[0].weight, saved["prompt_module.prefix_embedding.0.weight"])


def test_an_old_run_evaluates_as_it_did(old_runs, tmp_path, one_torch_thread):
    whole = old_runs / "whole"
    entry.main(["--config", str(whole / "config.yaml"), "--output_dir", str(tmp_path / "eval"), "--evaluate",
                "--checkpoint", str(whole / "checkpoints" / "last" / "trainable")])
    name = "karpathy_test_predictions.json"
    assert json.loads((tmp_path / "eval" / "eval" / name).read_text()) == json.loads((whole / "eval" / name).read_text())


def test_an_old_run_resumes_to_the_bit(old_runs, one_torch_thread):
    killed, whole = old_runs / "killed", old_runs / "whole"
    result = entry.main(["--config", str(killed / "config.yaml"), "--output_dir", str(killed), "--resume"])
    assert result["steps"] == 8
    resumed = load_file(str(killed / "checkpoints" / "last" / "trainable" / "model.safetensors"))
    uninterrupted = with_current_keys(load_file(str(whole / "checkpoints" / "last" / "trainable" /
                                                    "model.safetensors")), "image")
    assert set(resumed) == set(uninterrupted) and any(key.startswith("connectors.image.") for key in resumed)
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key
    logged = [json.loads(line) for line in (killed / "train_log.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (whole / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [r["step"] for r in expected if "loss" in r] == list(range(1, 9))
    assert [r["loss"] for r in logged if "loss" in r] == [r["loss"] for r in expected if "loss" in r]
    name = "karpathy_test_predictions.json"
    assert json.loads((killed / "eval" / name).read_text()) == json.loads((whole / "eval" / name).read_text())
