"""A modality plugin defined in its own file outside the repository's folders (tests/toy_modality.py) registers
through `model.plugins`, trains and evaluates through main, and its checkpoint loads again in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import epalm.training.run as entry
from tests.tiny_run import build_word_tokenizer, tiny_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    for split, count in (("train", 32), ("test", 6)):
        rows = []
        for k in range(count):
            vector = rng.normal(size=8).astype(np.float32)
            np.save(root / f"{split}{k}.npy", vector)
            answer = "yes" if vector.sum() > 0 else "no"
            rows.append({"id": f"{split}{k}", "toys": [f"{split}{k}.npy"], "meta": {"question_type": "sign"},
                         "messages": [{"role": "user", "content": "is <toy> big ?"},
                                      {"role": "assistant", "content": answer}]})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "test5.npy").write_bytes(b"not numpy")  # a broken file: reported and skipped
    vocab = build_word_tokenizer(root / "tokenizer")
    return {"data": root, "tokenizer": root / "tokenizer", "vocab": vocab}


def test_toy_modality_plugin_trains_evaluates_and_reloads(toy_setup, tmp_path):
    config = tiny_config(toy_setup, tmp_path / "c.yaml", max_steps=3)
    run = tmp_path / "run"
    result = entry.main([
        "--config", str(config), "--output_dir", str(run), "--set", "model.plugins=[tests.toy_modality]",
        "--set", "model.encoders={toy: {type: toy_mlp, model_kwargs: {width: 12, depth: 3}}}",
        "--set", "task.reader=chat", "--set", f"task.data_dir={toy_setup['data']}", "--set", "task.train_split=train",
        "--set", "task.val_split=", "--set", "task.test_split=test"])
    test = result["test"]
    assert result["steps"] == 3 and test["num_samples"] == 6
    assert test["num_predictions"] == 5 and test["num_skipped_media"] == 1
    assert "not a .npy toy" in test["skipped_media"][0]
    # A fresh process that never imported the plugin rebuilds the model from the checkpoint's own config.
    code = ("from epalm.models.checkpoint import load_checkpoint\n"
            f"model, _ = load_checkpoint({str(run / 'checkpoints' / 'last' / 'trainable')!r})\n"
            "print(model.modality, type(model.encoder_for()).__name__, model.encoder_for().hidden_size)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["toy", "ToyEncoder", "12"]


def test_unknown_plugin_module_is_a_config_error(toy_setup, tmp_path):
    config = tiny_config(toy_setup, tmp_path / "c.yaml", max_steps=1)
    from epalm.common.errors import ConfigError

    with pytest.raises(ConfigError, match="plugins: cannot import 'tests.no_such_plugin'"):
        entry.main(["--config", str(config), "--output_dir", str(tmp_path / "run"),
                    "--set", "model.plugins=[tests.no_such_plugin]", "--set", "task.reader=chat",
                    "--set", f"task.data_dir={toy_setup['data']}", "--set", "task.train_split=train",
                    "--set", "task.val_split=", "--set", "task.test_split=test"])
