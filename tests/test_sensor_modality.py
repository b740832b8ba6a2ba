"""The sensor modality, a plugin in one file (models/modalities/sensor.py): its world, data set, decoding, encoder,
shipped pretrained weights (models/demo_weights/sensor-demo), and training through main.py."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoTokenizer

from epalm.common.errors import MediaDecodeError
from epalm.common.errors import ConfigError, DataFormatError
from epalm.dataset.metrics.attribute_accuracy import parse_attributes
from epalm.dataset.tasks import TASK_READERS
from epalm.demo.pretraining.head_training import HeadTraining
from epalm.demo.pretraining.sensor_encoder import (SENSOR_DIR, SensorDemoSettings, build_sensor_demo,
                                                      sensor_demo_config, sensor_pool)
from epalm.demo.pretraining.settings import ENCODER_FILE, REPORT_FILE
from epalm.demo.pretraining.shipped import DEFAULT_OUT
from epalm.demo.pretraining.video_encoder import REPO_ROOT, linear_probe
from epalm.demo.synthetic.audio_world import AudioWorld
from epalm.demo.synthetic.build_sensor import build_sensor_dataset
from epalm.demo.synthetic.sensor_traces import CHANNELS, LENGTH, SAMPLE_RATE, SensorWorld, render_trace, write_trace
from epalm.demo.synthetic.worlds import discover_worlds
from epalm.models.encoders import ENCODERS, EncoderConfig, build_encoder
from epalm.models.modalities import get_modality, placeholders
from epalm.models.modalities.sensor import load_sensor_trace
import epalm.training.run as entry

SHIPPED = DEFAULT_OUT / SENSOR_DIR
ENCODER_YAML = REPO_ROOT / "configs" / "demo" / "sensor_encoder.yaml"
TINY = {"type": "sensor_transformer", "model_kwargs": {"width": 40, "depth": 2, "heads": 2}}


def _scenes(n: int, seed: str = "test-sensor"):
    world = SensorWorld()
    for index in range(n):
        rng = random.Random(f"{seed}/{index}")
        yield world, world.sample_scene(rng), rng


# ---------------------------------------------------------------- the world


def test_captions_state_every_attribute_in_words_the_demo_lm_has_whole():
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_OUT / "tokenizer")
    words = set()
    for world, scene, rng in _scenes(300):
        captions = world.captions(scene, rng)
        assert len(set(captions)) == 5
        for caption in captions:
            stated = parse_attributes(caption, world.attribute_vocabulary())
            assert all(stated[a] == {v} for a, v in world.attributes(scene).items()), (caption, scene)
            words.update(caption.split())
    assert {len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words} == {1}, words


def test_the_sensor_world_stays_out_of_the_registered_worlds():
    """The demo's tokenizer and LM corpus are built from the registered worlds: the LM never read about sensors."""
    assert "sensor" not in discover_worlds()


def test_sensor_scenes_are_the_audio_worlds_rendered_as_traces_that_show_the_pitch_band():
    audio = AudioWorld()
    for world, scene, rng in _scenes(40):
        assert world.attribute_vocabulary() == audio.attribute_vocabulary()
        state = rng.getstate()
        trace = render_trace(scene, rng)
        rng.setstate(state)
        assert np.array_equal(trace, render_trace(scene, rng))
        assert trace.shape == (len(CHANNELS), LENGTH) and trace.dtype == np.float32
        shaken = trace[np.argmax(trace.var(axis=1))]  # the axis the bursts shake
        spectrum, hz = np.abs(np.fft.rfft(shaken)), np.fft.rfftfreq(LENGTH, 1 / SAMPLE_RATE)
        peak_hz = hz[hz > 10][spectrum[hz > 10].argmax()]  # above the slow wander
        assert (peak_hz < 100) == (scene["pitch"] == "low"), (scene, peak_hz)


# ---------------------------------------------------------------- the plugin: registration, decoding, encoder


def test_plugin_registers_its_modality_and_encoder_from_its_own_file():
    modality = get_modality("sensor")
    assert (modality.placeholder, modality.data_key) == ("<sensor>", "sensors")
    assert placeholders()["<sensor>"] == "sensor"
    assert "sensor_transformer" in ENCODERS


def test_decode_reads_npy_traces_and_rejects_bad_files(tmp_path):
    config = EncoderConfig.from_dict(TINY)
    good = tmp_path / "good.npy"
    write_trace(np.ones((3, 50), np.float32), good)
    assert get_modality("sensor").decode(str(good), False, None, config).shape == (3, 50)
    bad = {
        "missing.npy": None,
        "text.npy": b"not an array",
        "pickled.npy": "object",
        "channels.npy": np.zeros((2, 50)),
        "flat.npy": np.zeros(50),
        "nan.npy": np.full((3, 50), np.nan),
        "strings.npy": np.array([["a"] * 4] * 3),
    }
    for name, content in bad.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            np.save(path, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
        elif content is not None:
            np.save(path, content)
        with pytest.raises(MediaDecodeError) as error:
            load_sensor_trace(str(path), 3)
        assert str(path) in str(error.value), name


def test_transform_crops_or_pads_to_the_encoders_length_and_normalises():
    encoder = build_encoder(EncoderConfig.from_dict(TINY))
    encoder.channel_mean.fill_(1.0)
    encoder.channel_std.fill_(2.0)
    transform = encoder.preprocessing(train=False)
    long, short = np.arange(3 * 4000, dtype=np.float32).reshape(3, 4000), np.full((3, 10), 5.0, np.float32)
    assert torch.equal(transform(long), (torch.from_numpy(long[:, 464:3536]) - 1) / 2)  # the middle 3072
    assert torch.equal(transform(short), torch.full((3, LENGTH), 2.0))  # padded with the last value
    assert encoder.preprocessing(train=True)(long).shape == (3, LENGTH)


def test_encoder_builds_from_its_config_and_reads_its_last_blocks():
    config = EncoderConfig.from_dict(yaml.safe_load(ENCODER_YAML.read_text())["model"]["encoders"]["sensor"])
    encoder = build_encoder(config)
    assert (encoder.modality, encoder.hidden_size, encoder.num_layers) == ("sensor", 96, 3)
    traces = torch.randn(2, 3, LENGTH)
    with torch.no_grad():
        both = encoder(traces, 2)
        assert both.shape == (2, 2, 96) and encoder(traces, 1, "mean").shape == (2, 1, 96)
        torch.testing.assert_close(encoder(traces, 1)[:, 0], both[:, 1])  # token k = block L - K + k
    with pytest.raises(ValueError, match="num_tokens"):
        encoder(traces, 4)
    with pytest.raises(ValueError, match="expected traces"):
        encoder(torch.randn(2, 3, 64), 1)  # not the encoder's length (the transform crops or pads)


def test_encoder_config_errors_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="pretrained"):
        build_encoder(EncoderConfig.from_dict({**TINY, "pretrained": True, "name": "x"}))
    with pytest.raises(ConfigError, match="unknown config key"):
        build_encoder(EncoderConfig.from_dict({**TINY, "model_kwargs": {"widht": 8}}))
    config = EncoderConfig.from_dict({**TINY, "checkpoint": str(SHIPPED / "model.safetensors")})
    with pytest.raises(DataFormatError, match="not a sensor_transformer checkpoint"):
        build_encoder(config)  # the shipped weights are of width 96, not 40


def test_preview_is_an_inline_plot(tmp_path):
    path = tmp_path / "t.npy"
    write_trace(np.random.default_rng(0).normal(size=(3, LENGTH)).astype(np.float32), path)
    assert get_modality("sensor").preview_html(str(path), tmp_path).startswith('<img alt="')


# ---------------------------------------------------------------- the data set and main.py


@pytest.fixture(scope="module")
def sensor_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sensor")
    build_sensor_dataset(root, seed=0, n_train=24, n_val=4, n_test=6, progress=False)
    return root


def test_empty_splits_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="n_test must be at least 1, got 0"):
        build_sensor_dataset(tmp_path, n_test=0, progress=False)
    assert not list(tmp_path.rglob("*"))  # refused before anything is written


def test_data_set_is_deterministic_and_read_by_its_reader(sensor_data, tmp_path):
    assert build_sensor_dataset(sensor_data, seed=0, n_train=24, n_val=4, n_test=6, progress=False).reused
    again = build_sensor_dataset(tmp_path, seed=0, n_train=24, n_val=4, n_test=6, progress=False)
    for split in ("train", "test"):
        first = (sensor_data / "sensors" / "annotation" / f"sensor_caption_{split}.json").read_text()
        assert first == (tmp_path / "sensors" / "annotation" / f"sensor_caption_{split}.json").read_text()
    trace = "test/trace000028.npy"
    assert (sensor_data / "sensors" / "traces" / trace).read_bytes() == (again.trace_root / trace).read_bytes()
    train, test = (TASK_READERS.build("sensor_caption", sensor_data, split) for split in ("train", "test"))
    assert (train.kind, train.modality, len(train), len(test)) == ("caption", "sensor", 24 * 5, 6)
    assert all(len(s.targets) == 5 and set(s.meta["attributes"]) == {"count", "pitch", "contour", "timbre"}
               for s in test)


def test_it_trains_through_main_py_for_a_few_steps(sensor_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the demo configs name the shipped weights relative to the repository root
    result = entry.main(["--config", "configs/demo/sensor_caption.yaml", "--data_dir", str(sensor_data),
                         "--output_dir", str(tmp_path / "run"), "--set", "train.max_steps=3",
                         "--set", "train.batch_size=8", "--set", f"train.feature_cache_dir={tmp_path / 'cache'}",
                         "--set", "eval.max_length=10"])
    assert result["steps"] == 3
    test = result["test"]
    assert test["num_predictions"] == 6 and test["num_skipped_media"] == 0
    assert "CIDEr" in test["scores"] and set(test["attribute_accuracy"]["per_attribute"]) == {
        "count", "pitch", "contour", "timbre"}
    assert "<img" in (tmp_path / "run" / "eval" / "test.html").read_text()


# ---------------------------------------------------------------- the shipped encoder and its build


def test_shipped_folder_is_small_loads_from_its_config_and_meets_its_targets():
    for name in ("model.safetensors", ENCODER_FILE, REPORT_FILE):
        assert (SHIPPED / name).stat().st_size < 5 * 1024 * 1024
    report = json.loads((SHIPPED / REPORT_FILE).read_text())
    assert all(accuracy >= 0.95 for accuracy in report["held_out_head_accuracy"].values()), report
    fields = json.loads((SHIPPED / ENCODER_FILE).read_text())
    assert fields == {**yaml.safe_load(ENCODER_YAML.read_text())["model"]["encoders"]["sensor"],
                      "normalization": "encoder"}
    encoder = build_encoder(sensor_demo_config())
    assert encoder.channel_mean.tolist() == pytest.approx(report["channel_mean"])


def test_shipped_features_separate_the_attributes_linearly():
    """Fresh traces of a stream neither the encoder nor the data set uses."""
    encoder = build_encoder(sensor_demo_config())
    train = sensor_pool(encoder, seed=31, split="train", n=300, progress=False)
    test = sensor_pool(encoder, seed=31, split="test", n=150, progress=False)
    for attribute, accuracy in linear_probe(encoder, train, test)["last"].items():
        assert accuracy >= 0.9, (attribute, accuracy)


def test_tiny_build_saves_a_loadable_encoder_deterministically(tmp_path):
    settings = SensorDemoSettings(width=16, depth=2, heads=2, n_train_traces=12, n_test_traces=6,
                                  probe_train_traces=12, statistics_traces=4,
                                  training=HeadTraining(steps=2, batch_size=4, warmup_steps=1))
    first = build_sensor_demo(tmp_path / "a", seed=3, progress=False, settings=settings)
    build_sensor_demo(tmp_path / "b", seed=3, progress=False, settings=settings)
    assert first == json.loads((tmp_path / "a" / SENSOR_DIR / REPORT_FILE).read_text())
    assert not list((tmp_path / "a").glob(".*")), "temporary folders left behind"
    weights = [(tmp_path / run / SENSOR_DIR / "model.safetensors").read_bytes() for run in ("a", "b")]
    assert weights[0] == weights[1]
    encoder = build_encoder(sensor_demo_config(tmp_path / "a"))
    assert (encoder.hidden_size, encoder.num_layers) == (16, 2)
