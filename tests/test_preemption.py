"""Preemption on the CPU, one process: SIGUSR1 / SIGTERM at any point of a run (the imports, setup, training,
validation, the final test, an evaluation-only run) -> exit 75 with the resumable state saved (or nothing to save),
and `--resume` ends with the weights, logs and scores of an uninterrupted run, bit for bit."""
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
from epalm.common.command_line import run_command
from tests.tiny_run import build_tiny_setup, tiny_config
from epalm.training.preemption import PREEMPTED_EXIT_STATUS, PREEMPTED_MARKER, SIGNAL_AT_STEP_ENV, SIGNAL_DURING_ENV

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


def _main_py(config: str, run: Path, env_extra: dict | None = None, evaluation: list[str] = NO_EVAL
             ) -> subprocess.Popen:
    """`python main.py` in the background; its output goes to files beside the run (a full pipe would block it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(run.parent / "stdout.txt", "w") as out, open(run.parent / "stderr.txt", "w") as err:
        return subprocess.Popen([sys.executable, "main.py", "--config", config, "--output_dir", str(run),
                                 *evaluation], cwd=REPO, env=env, stdout=out, stderr=err)


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


# --- signals outside the training steps -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted_with_evaluation(setup, tmp_path_factory):
    """2 epochs, validation after each, the final test: what every preempted-and-resumed run must end with."""
    run = tmp_path_factory.mktemp("straight_eval") / "run"
    result = entry.main(["--config", setup["config"], "--output_dir", str(run)])
    assert result["steps"] == STEPS and [r["epoch"] for r in _log(run) if "val_metric" in r] == [1, 2]
    return run


def _marker(run: Path) -> dict:
    return json.loads((run / PREEMPTED_MARKER).read_text())


def _same_run(expected: Path, got: Path) -> None:
    """Weights bit for bit, the log (without its preemption rows), validation and test predictions and scores."""
    want, have = _weights(expected), _weights(got)
    assert want.keys() == have.keys() and all(torch.equal(want[k], have[k]) for k in want)
    assert [r for r in _log(got) if "preempted" not in r] == _log(expected)
    for name in ("karpathy_val_epoch1", "karpathy_val_epoch2", "karpathy_test"):
        for kind in ("predictions", "metrics"):
            want_file = json.loads((expected / "eval" / f"{name}_{kind}.json").read_text())
            have_file = json.loads((got / "eval" / f"{name}_{kind}.json").read_text())
            if kind == "metrics":
                want_file, have_file = want_file["main"], have_file["main"]
            assert have_file == want_file, name


def test_signals_in_setup_validation_and_final_test_exit_75_and_resume_ends_as_an_uninterrupted_run(
        setup, uninterrupted_with_evaluation, tmp_path, monkeypatch):
    run = tmp_path / "run"
    argv = ["--config", setup["config"], "--output_dir", str(run)]

    monkeypatch.setenv(SIGNAL_DURING_ENV, "setup")  # once the model is built: nothing to save yet
    assert run_command(entry.main, argv) == PREEMPTED_EXIT_STATUS
    assert _marker(run) | {"time": None} == {"step": None, "signal": "SIGUSR1", "phase": "setup", "rank": 0,
                                             "checkpoint": None, "exit_status": 75, "time": None}
    assert not (run / "checkpoints").exists() and not _log(run)

    monkeypatch.setenv(SIGNAL_DURING_ENV, "validation")  # before the first batch of epoch 1's validation
    assert run_command(entry.main, argv + ["--resume"]) == PREEMPTED_EXIT_STATUS
    assert (_marker(run)["phase"], _marker(run)["step"]) == ("validation", STEPS // 2)
    assert _log(run)[-1] == {"step": STEPS // 2, "epoch": 1, "preempted": "SIGUSR1", "during": "validation"}
    assert not list((run / "eval").glob("karpathy_val_epoch1*"))  # stopped before it finished

    monkeypatch.setenv(SIGNAL_DURING_ENV, "test")  # validates epoch 1 again, trains epoch 2, validates, then stops
    assert run_command(entry.main, argv + ["--resume"]) == PREEMPTED_EXIT_STATUS
    assert (_marker(run)["phase"], _marker(run)["step"]) == ("test", STEPS)
    assert [r["epoch"] for r in _log(run) if "val_metric" in r] == [1, 2]
    assert not list((run / "eval").glob("karpathy_test*"))

    monkeypatch.delenv(SIGNAL_DURING_ENV)
    assert entry.main(argv + ["--resume"])["steps"] == STEPS  # training was over: only the test runs again
    assert not (run / PREEMPTED_MARKER).exists()
    _same_run(uninterrupted_with_evaluation, run)


def test_a_resume_that_restarts_from_scratch_is_told_apart(setup, uninterrupted_with_evaluation, tmp_path,
                                                            monkeypatch):
    """The comparison above fails on a resume that silently starts again from step 0 (its log repeats steps)."""
    run = tmp_path / "run"
    argv = ["--config", setup["config"], "--output_dir", str(run)]
    monkeypatch.setenv(SIGNAL_DURING_ENV, "validation")
    assert run_command(entry.main, argv) == PREEMPTED_EXIT_STATUS
    monkeypatch.delenv(SIGNAL_DURING_ENV)
    entry.main(argv)  # no --resume: from scratch into the same folder
    with pytest.raises(AssertionError):
        _same_run(uninterrupted_with_evaluation, run)


def test_signal_during_an_evaluation_only_run_exits_75_with_nothing_to_save(setup, uninterrupted_with_evaluation,
                                                                           tmp_path, monkeypatch):
    run = tmp_path / "run"
    argv = ["--config", setup["config"], "--output_dir", str(run), "--evaluate",
            "--checkpoint", str(uninterrupted_with_evaluation / "checkpoints" / "last" / "trainable")]
    monkeypatch.setenv(SIGNAL_DURING_ENV, "test")
    assert run_command(entry.main, argv) == PREEMPTED_EXIT_STATUS
    assert (_marker(run)["phase"], _marker(run)["checkpoint"]) == ("test", None)
    monkeypatch.delenv(SIGNAL_DURING_ENV)
    assert entry.main(argv)["test"]["main"] == json.loads(
        (uninterrupted_with_evaluation / "eval" / "karpathy_test_metrics.json").read_text())["main"]


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler for `sig` (/proc's SigCgt mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(mask >> (sig - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
def test_sigterm_during_the_imports_exits_75_once_the_run_starts(setup, tmp_path):
    """A SIGTERM in the seconds main.py spends importing torch and the libraries is noted (common/stop_signals.py)
    and stops the run, with nothing to save, as soon as the run starts: 75, not 143."""
    run = tmp_path / "run"
    process = _main_py(setup["config"], run)
    try:
        deadline = time.monotonic() + 60
        while not _catches(process.pid, signal.SIGTERM):  # main.py's note is in place: the imports follow
            assert process.poll() is None and time.monotonic() < deadline, _stderr(run)
            time.sleep(0.01)
        # the signal is sent during the imports: torch is not loaded yet
        assert "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text(), "no handler before torch's import"
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=600) == PREEMPTED_EXIT_STATUS, _stderr(run)
        waited = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopped: preempted (SIGTERM) during setup: nothing to save" in _stderr(run)
    assert _marker(run)["phase"] == "setup" and not (run / "checkpoints").exists()
    assert waited < 60, f"{waited:.0f} s from the signal to the exit (Slurm's default grace is 30 s)"
