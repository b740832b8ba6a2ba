"""Each encoder family end to end, from a local folder: train (its features cached), evaluate, the cached features
equal to recomputed ones, and the run reloaded from its checkpoint in a fresh process gives the same predictions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from epalm.dataset.feature_cache import FeatureCache
from epalm.demo.synthetic.build import build_image_dataset
from epalm.demo.synthetic.build_audio import build_audio_dataset
from epalm.demo.synthetic.build_video import build_video_dataset
from epalm.models.checkpoint import load_checkpoint
from epalm.models.modalities import get_modality
from epalm.training.data import read_split
from epalm.training.run_config import resolve_config
import epalm.training.run as entry
from tests.tiny_encoders import FAMILIES, save_family
from tests.tiny_run import build_word_tokenizer, tiny_config

REPO = Path(__file__).resolve().parent.parent
TASKS = {  # modality: task keys (a QA task for images and videos, captions for audio)
    "image": {"reader": "vqa_v2", "val_split": ""},
    "video": {"reader": "video_qa", "train_split": "train", "val_split": "", "test_split": "test"},
    "audio": {"reader": "audiocaps", "train_split": "train", "val_split": "", "test_split": "test"},
}
# How each family is bridged in its run: every readout and connector is used by some family.
BRIDGES = {
    "clip_vision": {"readout": "patches", "connector": "mlp"},  # LLaVA: all patch tokens of block -2
    "siglip_vision": {"readout": "mean", "injected_hidden_states": 2},
    "dinov2": {"readout": "cls", "injected_hidden_states": 2},  # eP-ALM
    "open_clip": {"readout": "cls", "connector": "prefix", "injected_hidden_states": 1},
    "open_clip_timm": {"readout": "patches", "patch_tokens": 4, "connector": "mlp", "injected_hidden_states": 1},
    "timm_pooled": {"readout": "mean", "injected_hidden_states": 2},  # two stages of different widths
    "whisper_encoder": {"readout": "patches", "patch_tokens": 4, "connector": "mlp", "injected_hidden_states": 1},
    "clap_audio": {"readout": "mean", "connector": "mlp", "connector_options": {"tokens": 2},
                   "injected_hidden_states": 1},  # multi_token's N MLPs over one vector
    "wav2vec2": {"readout": "mean", "injected_hidden_states": 2},
    "hubert": {"readout": "patches", "patch_tokens": 3, "connector": "prefix", "injected_hidden_states": 1},
    "videomae": {"readout": "mean", "injected_hidden_states": 2},
    "xclip_vision": {"readout": "cls", "injected_hidden_states": 2},
}
EVAL_SAMPLES = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_runs")
    build_image_dataset(root / "image", seed=0, n_train=8, n_val=1, n_test=4, questions_per_image=1, progress=False)
    build_video_dataset(root / "video", seed=0, n_train=8, n_val=1, n_test=3, questions_per_video=1, progress=False)
    build_audio_dataset(root / "audio", seed=0, n_train=8, n_val=1, n_test=3, progress=False)
    return {"root": root, "tokenizer": root / "tokenizer", "vocab": build_word_tokenizer(root / "tokenizer")}


@pytest.fixture(scope="module")
def runs(setup):
    """Every family trained (2 steps) and evaluated once; {family: run folder}."""
    out = {}
    for name, (modality, _) in FAMILIES.items():
        folder = setup["root"] / name
        section = save_family(name, folder / "encoder")
        path = tiny_config({**setup, "data": setup["root"] / modality}, folder / "config.yaml")
        config = yaml.safe_load(path.read_text())
        config["model"]["encoders"] = {modality: section}
        config["model"].update(BRIDGES[name])
        config["task"].update(TASKS[modality], max_eval_samples=EVAL_SAMPLES)
        config["train"].update(max_steps=2, batch_size=4, feature_cache=True,
                               feature_cache_dir=str(folder / "cache"))
        path.write_text(yaml.safe_dump(config))
        result = entry.main(["--config", str(path), "--output_dir", str(folder / "run")])
        assert result["steps"] == 2, name
        test = result["test"]
        assert test["num_predictions"] == test["num_samples"] == EVAL_SAMPLES and test["num_skipped_media"] == 0
        out[name] = folder / "run"
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_cached_features_equal_recomputed_ones(runs, name):
    run = runs[name]
    cfg = resolve_config(["--config", str(run / "config.yaml")])
    model, _ = load_checkpoint(run / "checkpoints" / "last" / "trainable", tokenizer=None,
                               load_tokenizer_if_missing=False)
    modality = FAMILIES[name][0]
    (cache_folder,) = Path(cfg.train.feature_cache_dir).iterdir()
    cache = FeatureCache(cache_folder)
    split = read_split(cfg, cfg.task.test_split, train=False)
    preprocess = get_modality(modality).preprocessor(model.encoder_for(modality), cfg.model.encoders[modality], False)
    media = sorted({sample.media for sample in split})[:2]
    with torch.no_grad():
        recomputed = model.encode(torch.stack([preprocess(str(split.media_root / m)) for m in media]), modality)
    expected_rows = model.features_per_instance(modality)
    for row, item in zip(recomputed, media):
        assert cache[item].shape == (expected_rows, model.encoder_for(modality).hidden_size)
        torch.testing.assert_close(cache[item], row.float(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(cache[media[0]], recomputed[1].float())  # the check tells two items apart


def test_every_run_reloads_from_its_checkpoint_in_a_fresh_process(runs, tmp_path):
    out = tmp_path / "reloaded.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "tests.reload_worker", str(out), *map(str, runs.values())],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reloaded = json.loads(out.read_text())
    for name, run in runs.items():
        (predicted,) = (run / "eval").glob("*test_predictions.json")
        rows = json.loads(predicted.read_text())
        trained = {str(row.get("question_id", row.get("image_id"))): row.get("answer", row.get("caption"))
                   for row in rows}
        assert reloaded[str(run)] == trained, name
