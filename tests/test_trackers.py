"""Experiment trackers through accelerate (`train.log_with`): TensorBoard event files and a W&B offline run hold
what train_log.jsonl holds; an unknown or uninstalled tracker is a user error before anything is built."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from accelerate.utils import is_tensorboard_available, is_wandb_available

from epalm.common.errors import ConfigError
import epalm.training.run as entry
from tests.tiny_run import build_tiny_setup, tiny_config
from epalm.training import trackers

NO_TEST = ["--set", "task.test_split="]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackers")
    setup = build_tiny_setup(root)
    setup["config"] = str(tiny_config(setup, root / "c.yaml", max_steps=3))
    return setup


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _tfrecords(path: Path):
    """The records of a TensorBoard event file (TFRecord: length, its CRC, the bytes, their CRC)."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        yield data[offset + 12:offset + 12 + length]
        offset += 12 + length + 4


def _scalars(folder: Path) -> dict[tuple[int, str], float]:
    from tensorboardX.proto.event_pb2 import Event  # ships with tensorboardX (the test extra)

    found = {}
    for path in folder.rglob("events.out.tfevents.*"):
        for record in _tfrecords(path):
            event = Event.FromString(record)
            for value in event.summary.value:
                if not value.metadata.plugin_data.plugin_name:  # scalars, not the hyperparameter tables
                    found[(event.step, value.tag)] = value.simple_value
    return found


@pytest.mark.skipif(not is_tensorboard_available(), reason="neither tensorboard nor tensorboardX is installed")
def test_tensorboard_gets_every_logged_number_and_the_config(setup, tmp_path):
    pytest.importorskip("tensorboardX", reason="the event files are read back with tensorboardX's protobuf classes")
    run = tmp_path / "run"
    entry.main(["--config", setup["config"], "--output_dir", str(run), "--set", "train.log_with=tensorboard",
                *NO_TEST])
    scalars = _scalars(run / "tensorboard" / "run")  # the project: the output folder's name
    expected = {}
    for record in _log(run):
        for key, value in trackers.tracker_values(record).items():
            expected[(record["step"], key)] = value
    assert {(1, "loss"), (3, "lr/connector"), (3, "val_metric")} <= set(expected)
    assert set(scalars) == set(expected)
    for key, value in expected.items():
        assert scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key  # stored as float32
    (hparams,) = (run / "tensorboard" / "run").glob("*/hparams.yml")
    assert "train.lr: 0.01" in hparams.read_text()


@pytest.mark.skipif(not is_wandb_available(), reason="wandb is not installed (pip install -e '.[trackers]')")
def test_wandb_offline_run_without_network(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    entry.main(["--config", setup["config"], "--output_dir", str(run), "--set", "train.log_with=wandb",
                "--set", "train.tracker_project=epalm-test", *NO_TEST])
    (offline,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    # W&B's record file stores keys and JSON values as plain protobuf strings: every logged loss and the
    # config's keys are in it (read without W&B's internal reader, which moves between versions).
    stored = offline.read_bytes()
    for record in _log(run):
        if "loss" in record:
            assert json.dumps(record["loss"]).encode() in stored, record
    assert b"lr/connector" in stored and b"train.lr" in stored and b"epalm-test" in stored


def test_unknown_or_missing_tracker_is_a_user_error_before_anything_is_built(setup, tmp_path, monkeypatch):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"train\.log_with: 'tensorbord'.*did you mean `tensorboard`"):
        entry.main(["--config", setup["config"], "--output_dir", str(run), "--set", "train.log_with=tensorbord"])
    monkeypatch.setitem(trackers.TRACKERS, "wandb", ("`wandb`", lambda: False))
    with pytest.raises(ConfigError, match=r"train\.log_with: wandb needs the `wandb` package.*\[trackers\]"):
        entry.main(["--config", setup["config"], "--output_dir", str(run), "--set", "train.log_with=wandb"])
    assert not run.exists()  # stopped before the run folder (or a model) was made
