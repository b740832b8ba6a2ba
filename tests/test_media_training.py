"""End to end on the CPU for video and audio: tiny TimeSformer / AST, synthetic clips, train + evaluate."""
from __future__ import annotations

import pytest
import yaml
from safetensors.torch import load_file

from epalm.demo.synthetic.build_audio import build_audio_dataset
from epalm.demo.synthetic.build_video import build_video_dataset
import epalm.training.run as entry
from tests.tiny_run import build_word_tokenizer, tiny_config
from epalm.training.mixture import MixtureBatchSampler, MixtureDataset

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
    config["model"]["encoders"] = {modality: TINY_ENCODERS[modality]}
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


@pytest.mark.parametrize("feature_cache", [False, True])
def test_joint_training_on_video_and_audio_tasks(media_setup, tmp_path, feature_cache):
    """One model (a TimeSformer and an AST, a connector each) trained on a mixture, evaluated per task."""
    path = tiny_config(media_setup, tmp_path / "c.yaml")
    config = yaml.safe_load(path.read_text())
    config["model"]["encoders"] = {"video": TINY_ENCODERS["video"], "audio": TINY_ENCODERS["audio"]}
    config["mixture"] = {
        name: {"task": {"data_dir": str(media_setup["data"]), **TASKS[name][1], "val_split": ""}, "weight": 1.0}
        for name in ("video_qa", "audio_caption")
    }
    config["train"].update(max_steps=6, feature_cache=feature_cache, feature_cache_dir=str(tmp_path / "cache"))
    path.write_text(yaml.safe_dump(config))
    result = entry.main(["--config", str(path), "--output_dir", str(tmp_path / "run")])
    assert result["steps"] == 6 and set(result["tests"]) == {"video_qa", "audio_caption"}
    assert result["tests"]["video_qa"]["main"]["name"] == "exact_match"
    assert result["tests"]["audio_caption"]["main"]["name"] == "CIDEr"
    assert [(row["modality"], row["task"]) for row in result["table"]] == [("audio", "audio_caption"),
                                                                           ("video", "video_qa")]
    assert (tmp_path / "run" / "eval" / "tasks.md").is_file()
    assert (tmp_path / "run" / "eval" / "audio_caption" / "test_predictions.json").is_file()
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "trainable" / "model.safetensors"))
    assert {".".join(key.split(".")[:2]) for key in weights} == {"connectors.video", "connectors.audio",
                                                                 "prompt_module.prefix_embedding"}


def test_mixture_batches_hold_one_task_and_follow_the_weights():
    class Split:
        def __init__(self, n):
            self.n = n

    class Fake:
        def __init__(self, n):
            self.split, self.epoch = Split(n), 0

        def __len__(self):
            return self.split.n

        def set_epoch(self, epoch):
            self.epoch = epoch

    dataset = MixtureDataset({"a": Fake(40), "b": Fake(24), "c": Fake(16)})
    sampler = MixtureBatchSampler(dataset, [1.0, 3.0, 0.0], batch_size=4, seed=0)
    first = list(sampler)
    assert len(first) == 20 and all(len({task for task, _ in batch}) == 1 for batch in first)
    counts = [sum(batch[0][0] == task for batch in first) for task in range(3)]
    assert counts[2] == 0 and counts[1] > counts[0] > 0
    assert list(sampler) == first  # a function of (seed, epoch) only
    dataset.set_epoch(1)
    assert list(sampler) != first
