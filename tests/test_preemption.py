"""Preemption on the CPU, one process: SIGUSR1 / SIGTERM -> the state saved at the next step boundary, exit 75,
and `--resume` ends with the weights of an uninterrupted run, bit for bit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import epalm.training.run as entry
from tests.tiny_run import build_tiny_setup, tiny_config
from epalm.training.preemption import PREEMPTED_EXIT_STATUS, PREEMPTED_MARKER, SIGNAL_AT_STEP_ENV

REPO = Path(__file__).resolve().parent.parent
STEPS = 24  # 2 epochs of 12 steps
NO_EVAL = ["--set", "task.val_split=", "--set", "task.test_split="]  # training alone is what is compared


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("preemption")
    setup = build_tiny_setup(root)
    setup["config"] = str(tiny_config(setup, root / "c.yaml", epochs=2))
    return setup


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    assert entry.main(["--config", setup["config"], "--output_dir", str(run), *NO_EVAL])["steps"] == STEPS
    return _weights(run)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))


def _log(run: Path) -> list[dict]:
    path = run / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _main_py(config: str, run: Path, env_extra: dict | None = None) -> subprocess.Popen:
    """`python main.py` in the background; its output goes to files beside the run (a full pipe would block it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(run.parent / "stdout.txt", "w") as out, open(run.parent / "stderr.txt", "w") as err:
        return subprocess.Popen([sys.executable, "main.py", "--config", config, "--output_dir", str(run), *NO_EVAL],
                                cwd=REPO, env=env, stdout=out, stderr=err)


def _stderr(run: Path) -> str:
    return (run.parent / "stderr.txt").read_text()[-3000:]


def _resume_and_compare(config: str, run: Path, expected: dict[str, torch.Tensor]) -> None:
    assert entry.main(["--config", config, "--output_dir", str(run), "--resume", *NO_EVAL])["steps"] == STEPS
    assert not (run / PREEMPTED_MARKER).exists()  # the resumed run cleared it
    got = _weights(run)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_signal_at_a_step_saves_there_exits_75_and_resumes_to_the_bit(setup, uninterrupted, tmp_path):
    run = tmp_path / "run"
    process = _main_py(setup["config"], run, {SIGNAL_AT_STEP_ENV: "17"})  # the trainer sends itself SIGUSR1
    assert process.wait(timeout=600) == PREEMPTED_EXIT_STATUS, _stderr(run)
    assert "stopped: preempted (SIGUSR1) at step 17" in _stderr(run)
    log = _log(run)
    assert max(r["step"] for r in log if "loss" in r) == 17  # mid epoch 2: nothing after the signalled step
    assert log[-1] == {"step": 17, "epoch": 1, "preempted": "SIGUSR1"}
    marker = json.loads((run / PREEMPTED_MARKER).read_text())
    assert (marker["step"], marker["signal"], marker["exit_status"]) == (17, "SIGUSR1", 75)
    _resume_and_compare(setup["config"], run, uninterrupted)


def test_external_sigterm_mid_training_then_resume_matches_uninterrupted(setup, uninterrupted, tmp_path):
    run = tmp_path / "run"
    process = _main_py(setup["config"], run)
    try:
        deadline = time.monotonic() + 600
        # The trainer's handlers are in place once it has logged a step (log_every is 1).
        while not any("loss" in r for r in _log(run)):
            assert process.poll() is None and time.monotonic() < deadline, _stderr(run)
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=600) == PREEMPTED_EXIT_STATUS, _stderr(run)
    finally:
        if process.poll() is None:
            process.kill()
    marker = json.loads((run / PREEMPTED_MARKER).read_text())
    assert marker["signal"] == "SIGTERM" and 1 <= marker["step"] < STEPS
    assert max(r["step"] for r in _log(run) if "loss" in r) == marker["step"]
    _resume_and_compare(setup["config"], run, uninterrupted)
