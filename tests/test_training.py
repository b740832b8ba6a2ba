"""main.py end to end on the CPU: train, checkpoint, resume, evaluate, two processes, bad inputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from epalm.common.config_io import ConfigError
import epalm.training.run as entry
from tests.tiny_run import build_tiny_setup, tiny_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_unknown_config_key_fails_naming_it(setup, tmp_path):
    config = tiny_config(setup, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        entry.main(["--config", str(config), "--set", "train.lrr=0.1"])
    values = json.loads(json.dumps(__import__("yaml").safe_load(config.read_text())))
    values["model"]["promt_len"] = 4
    (tmp_path / "bad.yaml").write_text(json.dumps(values))
    with pytest.raises(ConfigError, match=r"model\.promt_len"):
        entry.main(["--config", str(tmp_path / "bad.yaml")])


def test_train_checkpoint_resume_evaluate(setup, tmp_path):
    config = str(tiny_config(setup, tmp_path / "c.yaml"))
    run = tmp_path / "run"
    first = entry.main(["--config", config, "--output_dir", str(run), "--save_best"])
    steps_one_epoch = first["steps"]
    assert steps_one_epoch == 12  # 48 images x 2 questions / batch 8
    assert (run / "best" / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    assert {"karpathy_val_epoch1_metrics.json", "karpathy_test_predictions.json", "karpathy_test.html"} <= {
        p.name for p in (run / "eval").iterdir()
    }
    after_one = _weights(run)
    # --resume with a longer schedule continues from epoch 1, step 12.
    second = entry.main(["--config", config, "--output_dir", str(run), "--resume", "--set", "train.epochs=2"])
    assert second["steps"] == 2 * steps_one_epoch
    assert [r["step"] for r in _log(run) if "loss" in r][steps_one_epoch:] == list(range(1, 25))[steps_one_epoch:]
    assert any(not torch.equal(after_one[k], v) for k, v in _weights(run).items())
    # Evaluation only, from the best checkpoint: one prediction per test question.
    result = entry.main(["--config", config, "--output_dir", str(tmp_path / "eval"), "--evaluate",
                         "--checkpoint", str(run / "best")])
    test = result["test"]
    assert test["num_samples"] == test["num_predictions"] == 13 * 2
    assert test["version"] == "2021" and test["provenance"]["git_commit"]


def _run(args: list[str], env_extra: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def test_killed_mid_epoch_and_resumed_ends_with_the_same_weights(setup, tmp_path):
    config = str(tiny_config(setup, tmp_path / "c.yaml", epochs=2, checkpoint_every_steps=2))
    straight = tmp_path / "straight"
    entry.main(["--config", config, "--output_dir", str(straight)])
    killed = tmp_path / "killed"
    result = _run([sys.executable, "main.py", "--config", config, "--output_dir", str(killed)],
                  {"EPALM_KILL_AT_STEP": "17"}, check=False)
    assert result.returncode == -9, result.stderr[-2000:]  # SIGKILL in the middle of epoch 2
    assert max(r["step"] for r in _log(killed) if "loss" in r) == 17
    entry.main(["--config", config, "--output_dir", str(killed), "--resume"])
    expected, got = _weights(straight), _weights(killed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_two_process_cpu_run_returns_one_prediction_per_sample(setup, tmp_path):
    config = str(tiny_config(setup, tmp_path / "c.yaml", max_steps=3))
    run = tmp_path / "ddp"
    _run(["torchrun", "--standalone", "--nproc_per_node", "2", "main.py", "--config", config, "--output_dir", str(run)],
         {"ACCELERATE_USE_CPU": "true"})
    predictions = json.loads((run / "eval" / "karpathy_test_predictions.json").read_text())
    ids = [p["question_id"] for p in predictions]
    assert len(ids) == len(set(ids)) == 13 * 2  # odd count: the sharded sampler pads, gathering trims


def test_corrupt_image_is_reported_skipped_and_counted(setup, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    victim = sorted((data / "COCO" / "images" / "val2014").iterdir())[-1]  # a test image (val and test share)
    victim.write_bytes(b"not a jpeg")
    (data / "COCO" / "images" / "train2014" / "COCO_train2014_000000000001.jpg").unlink()
    config = str(tiny_config({**setup, "data": data}, tmp_path / "c.yaml"))
    result = entry.main(["--config", config, "--output_dir", str(tmp_path / "run")])
    test = result["test"]
    assert test["num_skipped_media"] == 2 and test["num_predictions"] == 13 * 2 - 2
    assert any(victim.name in message for message in test["skipped_media"])


def test_malformed_annotation_names_file_and_entry(setup, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    path = data / "vqa" / "karpathy_train.json"
    entries = json.loads(path.read_text())
    del entries[5]["sent"]
    path.write_text(json.dumps(entries))
    config = str(tiny_config({**setup, "data": data}, tmp_path / "c.yaml"))
    with pytest.raises(ValueError, match=r"karpathy_train\.json.*(entry|index) 5.*sent"):
        entry.main(["--config", config, "--output_dir", str(tmp_path / "run")])
