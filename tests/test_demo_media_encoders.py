"""The demo's shipped video and audio encoders (models/demo_weights/{timesformer,ast}-demo) and the code behind them."""
from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from epalm.demo.pretraining.audio_encoder import (AUDIO_DIR, ASTDemoSettings, ast_demo_config, build_ast_demo,
                                                     render_audio_pool)
from epalm.demo.pretraining.head_training import HeadTraining
from epalm.demo.pretraining.settings import ENCODER_FILE, REPORT_FILE
from epalm.demo.pretraining.shipped import DEFAULT_OUT
from epalm.demo.pretraining.video_encoder import (REPO_ROOT, VIDEO_DIR, TimesformerDemoSettings,
                                                     build_timesformer_demo, linear_probe, render_video_pool,
                                                     timesformer_demo_config)
from epalm.demo.synthetic.audio_world import AudioWorld
from epalm.demo.synthetic.video_world import VideoWorld
from epalm.models.encoders import EncoderConfig, build_encoder
from epalm.models.modalities.audio.decode import load_audio
from epalm.models.modalities.video.decode import load_video_frames

MAX_FILE_BYTES = 5 * 1024 * 1024
SHIPPED = {"video": DEFAULT_OUT / VIDEO_DIR, "audio": DEFAULT_OUT / AUDIO_DIR}


@pytest.fixture(scope="module")
def shipped_video():
    return build_encoder(timesformer_demo_config())


@pytest.fixture(scope="module")
def shipped_audio():
    return build_encoder(ast_demo_config())


def _render(world, seed: int, path) -> dict:
    rng = random.Random(f"test-media-encoders/{seed}")
    scene = world.sample_scene(rng)
    world.render(scene, rng, path)
    return world.attributes(scene)


# ---------------------------------------------------------------- the shipped encoders


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_shipped_folder_is_complete_small_and_meets_its_targets(modality):
    folder = SHIPPED[modality]
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", ENCODER_FILE, REPORT_FILE):
        assert (folder / name).is_file(), folder / name
    for path in folder.iterdir():
        assert path.stat().st_size < MAX_FILE_BYTES, path
    assert not list(DEFAULT_OUT.glob(f".{folder.name}.*")), "an interrupted build left a temporary folder"
    report = json.loads((folder / REPORT_FILE).read_text())
    for attribute, accuracy in report["held_out_head_accuracy"].items():
        assert accuracy >= 0.95, (modality, attribute, accuracy)
    assert set(report["linear_probe_accuracy"]) == {"last", "last-1"}


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_encoder_json_loads_the_trained_weights_from_the_repo_root(modality, monkeypatch):
    """The fields of encoder.json as they stand (a repo-relative `name`) are a config the project loads unchanged."""
    folder = SHIPPED[modality]
    fields = json.loads((folder / ENCODER_FILE).read_text())
    assert fields["name"] == str(folder.relative_to(REPO_ROOT)) and fields["pretrained"] is True
    monkeypatch.chdir(REPO_ROOT)
    encoder = build_encoder(EncoderConfig.from_dict(fields))
    # transformers saves under its hub key names (`...attention.query`), not the module's: match by value instead.
    saved = list(load_file(str(folder / "model.safetensors")).values())
    loaded = list(encoder.model.state_dict().values())
    assert len(saved) == len(loaded)
    for tensor in loaded:  # every weight of the built model is one of the file's: none left at its initialisation
        assert any(t.shape == tensor.shape and torch.equal(t, tensor) for t in saved)


def test_shipped_video_encoder_reads_decoded_clips(shipped_video, tmp_path):
    world, clips = VideoWorld(), []
    for seed in range(2):
        path = tmp_path / f"clip{seed}.mp4"
        _render(world, seed, path)
        clips.append(shipped_video.preprocessing(False)(load_video_frames(str(path), 8, train=False)))
    with torch.no_grad():
        tokens = shipped_video(torch.stack(clips), 2)
    assert tokens.shape == (2, 2, 128)
    assert torch.isfinite(tokens).all() and not torch.allclose(tokens[0], tokens[1])
    report = json.loads((SHIPPED["video"] / REPORT_FILE).read_text())
    assert list(shipped_video.mean) == report["pixel_mean"] and list(shipped_video.std) == report["pixel_std"]


def test_shipped_audio_encoder_reads_decoded_clips(shipped_audio, tmp_path):
    world, clips = AudioWorld(), []
    for seed in range(2):
        path = tmp_path / f"clip{seed}.wav"
        _render(world, seed, path)
        clips.append(shipped_audio.preprocessing(False)(load_audio(str(path), shipped_audio.sample_rate)))
    with torch.no_grad():
        tokens = shipped_audio(torch.stack(clips), 2)
    assert tokens.shape == (2, 2, 128)
    assert torch.isfinite(tokens).all() and not torch.allclose(tokens[0], tokens[1])


def _assert_linearly_separable(encoder, train, test) -> None:
    """A logistic regression on the frozen CLS of the last block (what the bridge reads), fitted and scored on fresh
    clips, neither seen in pretraining. Randomly initialised encoders of the same shapes scored 0.35-0.48 (video) and
    0.42-0.87 (audio) on these clips."""
    for attribute, accuracy in linear_probe(encoder, train, test)["last"].items():
        assert accuracy >= 0.9, (attribute, accuracy)


def test_shipped_video_features_separate_the_attributes_linearly(shipped_video):
    train, _ = render_video_pool(shipped_video, seed=31, split="train", n=96, all_frames=False, progress=False)
    test, gap = render_video_pool(shipped_video, seed=31, split="test", n=48, all_frames=False, progress=False)
    assert gap == 0.0  # the pool's inputs are exactly what the demo's decoding + preprocessing gives
    _assert_linearly_separable(shipped_video, train, test)


def test_shipped_audio_features_separate_the_attributes_linearly(shipped_audio):
    train = render_audio_pool(shipped_audio, seed=31, split="train", n=120, progress=False)
    test = render_audio_pool(shipped_audio, seed=31, split="test", n=60, progress=False)
    _assert_linearly_separable(shipped_audio, train, test)


# ---------------------------------------------------------------- the build code path (tiny, not quality)

TINY_TRAINING = HeadTraining(steps=50, batch_size=4, warmup_steps=1)  # `steps` below overrides the 50


def _check_tiny_build(report: dict, folder, modality: str) -> None:
    assert not list(folder.parent.glob(".*")), "temporary folders left behind"
    assert report == json.loads((folder / REPORT_FILE).read_text())
    assert report["settings"]["training"]["steps"] == 2
    assert report["encoder"]["name"] == str(folder.resolve())  # outside the repo: an absolute path
    assert set(report["linear_probe_accuracy"]) == {"last", "last-1"}
    encoder = build_encoder(EncoderConfig.from_dict(json.loads((folder / ENCODER_FILE).read_text())))
    assert encoder.modality == modality and encoder.num_layers == 2


def test_tiny_video_build_saves_a_loadable_encoder(tmp_path):
    settings = TimesformerDemoSettings(num_layers=2, n_train_clips=6, n_test_clips=4, probe_train_clips=6,
                                       statistics_clips=2, training=TINY_TRAINING)
    report = build_timesformer_demo(tmp_path, seed=3, steps=2, progress=False, settings=settings)
    _check_tiny_build(report, tmp_path / VIDEO_DIR, "video")
    assert report["preprocessing_max_abs_difference"] == 0.0
    assert len(report["pixel_mean"]) == 3


def test_tiny_audio_build_saves_a_loadable_encoder_deterministically(tmp_path):
    settings = ASTDemoSettings(num_layers=2, n_train_clips=6, n_test_clips=4, probe_train_clips=6,
                               training=TINY_TRAINING)
    first = build_ast_demo(tmp_path / "a", seed=3, steps=2, progress=False, settings=settings)
    _check_tiny_build(first, tmp_path / "a" / AUDIO_DIR, "audio")
    assert first["clip_fbank_frames"] <= settings.audio_frames
    build_ast_demo(tmp_path / "b", seed=3, steps=2, progress=False, settings=settings)
    weights = [load_file(str(tmp_path / run / AUDIO_DIR / "model.safetensors")) for run in ("a", "b")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
