"""The frozen-encoder feature cache: same training result as on-the-fly encoding, invalidated by changes."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from epalm.dataset.feature_cache import FeatureCache
import epalm.training.run as entry
from tests.tiny_run import build_tiny_setup, tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("cache"))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))


def test_training_from_the_cache_equals_training_from_media(setup, tmp_path):
    cache_dir = tmp_path / "features"
    common = ["--set", "train.max_steps=6", "--set", "train.augment=false", "--set", "task.val_split="]
    config = str(tiny_config(setup, tmp_path / "c.yaml"))
    entry.main(["--config", config, "--output_dir", str(tmp_path / "media"), *common])
    cached = entry.main(["--config", config, "--output_dir", str(tmp_path / "cached"), *common,
                         "--set", "train.feature_cache=true", "--set", f"train.feature_cache_dir={cache_dir}"])
    a, b = _weights(tmp_path / "media"), _weights(tmp_path / "cached")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    assert cached["test"]["num_predictions"] == 26
    (folder,) = list(cache_dir.iterdir())
    cache = FeatureCache(folder)
    assert len(cache.entries) == 48 + 13  # train images + test images, each encoded once
    assert cache[next(iter(cache.entries))].shape == (2, 48)  # K tokens x encoder width


def test_cache_is_keyed_by_encoder_and_file(setup, tmp_path):
    cache_dir = tmp_path / "features"
    base = ["--set", "train.max_steps=1", "--set", "task.val_split=", "--set", "task.test_split=",
            "--set", "train.feature_cache=true", "--set", f"train.feature_cache_dir={cache_dir}"]
    config = str(tiny_config(setup, tmp_path / "c.yaml"))
    entry.main(["--config", config, "--output_dir", str(tmp_path / "a"), *base])
    entry.main(["--config", config, "--output_dir", str(tmp_path / "b"), *base,
                "--set", "model.encoders.image.normalization=clip"])  # other preprocessing: a second cache
    assert len(list(cache_dir.iterdir())) == 2
    folder = sorted(cache_dir.iterdir(), key=lambda p: p.stat().st_mtime)[0]
    cache = FeatureCache(folder)
    media = next(iter(cache.entries))
    image = Path(setup["data"]) / "COCO" / "images" / media
    assert cache.missing([media], image.parent.parent) == []
    time.sleep(0.01)
    os.utime(image)  # the file changed: its entry is stale
    assert cache.missing([media], Path(setup["data"]) / "COCO" / "images") == [media]
