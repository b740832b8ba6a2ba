"""End to end on the CPU for video and audio: tiny TimeSformer / AST, synthetic clips, train + evaluate."""
from __future__ import annotations

import pytest
import yaml

import training.run as entry
from dataset.synthetic.build_audio import build_audio_dataset
from dataset.synthetic.build_video import build_video_dataset
from tests.tiny_run import build_word_tokenizer, tiny_config

TINY_ENCODERS = {
    "video": {"type": "timesformer", "name": "", "num_frames": 4,
              "model_kwargs": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "intermediate_size": 64}},
    "audio": {"type": "ast", "name": "", "audio_frames": 160, "mel_bins": 64,
              "model_kwargs": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                               "intermediate_size": 64, "frequency_stride": 16, "time_stride": 16}},
}
TASKS = {
    "video_qa": ("video", {"reader": "video_qa", "train_split": "train", "val_split": "val", "test_split": "test"}),
    "video_caption": ("video", {"reader": "msrvtt_caption", "train_split": "train7k", "val_split": "val",
                                "test_split": "test"}),
    "audio_caption": ("audio", {"reader": "audiocaps", "train_split": "train", "val_split": "val",
                                "test_split": "test"}),
}


@pytest.fixture(scope="module")
def media_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    build_video_dataset(root / "data", seed=0, n_train=16, n_val=4, n_test=5, progress=False)
    build_audio_dataset(root / "data", seed=0, n_train=16, n_val=4, n_test=5, progress=False)
    vocab = build_word_tokenizer(root / "tokenizer")
    return {"data": root / "data", "tokenizer": root / "tokenizer", "vocab": vocab}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("feature_cache", [False, True])
def test_tiny_media_training_and_evaluation(media_setup, tmp_path, task, feature_cache):
    modality, task_keys = TASKS[task]
    path = tiny_config(media_setup, tmp_path / "c.yaml")
    config = yaml.safe_load(path.read_text())
    config["model"]["encoder"] = TINY_ENCODERS[modality]
    config["task"].update(task_keys)
    config["train"].update(max_steps=3, feature_cache=feature_cache, feature_cache_dir=str(tmp_path / "cache"))
    path.write_text(yaml.safe_dump(config))
    result = entry.main(["--config", str(path), "--output_dir", str(tmp_path / "run")])
    test = result["test"]
    assert result["steps"] == 3
    assert test["num_predictions"] == test["num_samples"] > 0 and test["num_skipped_media"] == 0
    if task.endswith("caption"):
        assert "CIDEr" in test["scores"] and "attribute_accuracy" in test
    assert (tmp_path / "run" / "eval" / "test.html").is_file()
