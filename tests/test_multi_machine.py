"""Several machines on the CPU: two `run_scripts/launch.sh` "machines" on localhost (one gloo process each)
train to the weights of one machine with two processes; they stop together when preemption signals reach
only some of their processes; and run_scripts/slurm/train.sbatch (with stand-ins for srun, scancel and
scontrol) requeues itself on its time-limit signal and its requeued run resumes to the same weights."""
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

from epalm.common.ports import free_port
from epalm.training.preemption import PREEMPTED_EXIT_STATUS, PREEMPTED_MARKER
from tests.tiny_run import build_tiny_setup, tiny_config

REPO = Path(__file__).resolve().parent.parent
STEPS = 12  # 2 epochs of 6 steps for 2 processes (96 samples, batch 8 per process)
NO_EVAL = ["--set", "task.val_split=", "--set", "task.test_split="]  # training alone is what is compared
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process trees from /proc")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("machines")
    setup = build_tiny_setup(root)
    setup["config"] = str(tiny_config(setup, root / "c.yaml", max_steps=STEPS))
    return setup


def _env(**extra) -> dict:
    # The launcher calls `python` and `accelerate`: this interpreter's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": path, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def one_machine_two_processes(setup, tmp_path_factory) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("reference") / "run"
    result = subprocess.run(["torchrun", "--nproc_per_node", "2", "--master_port", str(free_port()), "main.py",
                             "--config", setup["config"], "--output_dir", str(run), *NO_EVAL],
                            cwd=REPO, env=_env(ACCELERATE_USE_CPU="true"), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"weights": _weights(run), "losses": _losses(run)}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))


def _log(run: Path) -> list[dict]:
    path = run / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in _log(run) if "loss" in r]


def _start_machines(setup: dict, run: Path, *extra: str) -> list[subprocess.Popen]:
    """`launch.sh` twice, as machines 0 and 1 of 2 (no GPU: one CPU process each); output in files."""
    port = free_port()
    machines = []
    for rank in (0, 1):
        env = _env(NUM_GPUS="0", NUM_MACHINES="2", MACHINE_RANK=str(rank), MAIN_PROCESS_IP="127.0.0.1",
                   MAIN_PROCESS_PORT=str(port), DATA_DIR=str(setup["data"]))
        with open(run.parent / f"machine{rank}.txt", "a") as out:
            machines.append(subprocess.Popen(["bash", "run_scripts/launch.sh", setup["config"], str(run), *NO_EVAL,
                                              *extra], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
    return machines


def _wait(machines: list[subprocess.Popen]) -> list[int]:
    try:
        return [machine.wait(timeout=900) for machine in machines]
    finally:
        _kill(machines)


def _kill(machines: list[subprocess.Popen]) -> None:
    """SIGKILL whatever is left of the machines' process trees (their launchers ignore SIGTERM)."""
    for machine in machines:
        if machine.poll() is None:
            launchers, trainers = _process_tree(machine.pid)
            _signal(launchers + trainers, signal.SIGKILL)
            machine.wait()


def _output(run: Path) -> str:
    return "\n".join((run.parent / f"machine{rank}.txt").read_text()[-3000:] for rank in (0, 1))


def _process_tree(root: int) -> tuple[list[int], list[int]]:
    """The launchers (launch.sh, accelerate) and the training process under `root`, from /proc: the training
    process is the one without children (the tiny run has no data-loader workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process has exited
        pid, ppid = int(stat.parent.name), int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return [p for p in tree if p in children], [p for p in tree if p not in children]


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _assert_same_weights(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), (key, (expected[key] - got[key]).abs().max().item())


def test_two_machines_train_like_one_machine_with_two_processes(setup, one_machine_two_processes, tmp_path):
    run = tmp_path / "run"
    assert _wait(_start_machines(setup, run)) == [0, 0], _output(run)
    # One group of two processes (main.py stops if the launch and the group disagree), the same batches and the
    # same two-operand gradient all-reduce as on one machine: the same numbers, bit for bit.
    assert _losses(run) == one_machine_two_processes["losses"]
    _assert_same_weights(one_machine_two_processes["weights"], _weights(run))


def test_signals_reaching_some_processes_stop_both_machines_at_one_step(setup, tmp_path):
    run = tmp_path / "run"
    machines = _start_machines(setup, run)
    try:
        deadline = time.monotonic() + 900
        while not _losses(run):  # both training processes have their handlers once a step is logged
            assert all(m.poll() is None for m in machines) and time.monotonic() < deadline, _output(run)
            time.sleep(0.05)
        # As Slurm does, signal every process of machine 1 (launch.sh, accelerate, the trainer): SIGUSR1.
        launchers, trainers = _process_tree(machines[1].pid)
        assert len(launchers) == 2 and len(trainers) == 1, (launchers, trainers)
        _signal(launchers + trainers, signal.SIGUSR1)
        # Machine 0: SIGTERM to launch.sh and accelerate only; its trainer learns of the stop from machine 1.
        _signal(_process_tree(machines[0].pid)[0], signal.SIGTERM)
    except BaseException:
        _kill(machines)
        raise
    statuses = _wait(machines)
    assert statuses == [PREEMPTED_EXIT_STATUS] * 2, _output(run)
    # Each machine's first process wrote the marker (the last one stays); only machine 1 got a signal.
    marker = json.loads((run / PREEMPTED_MARKER).read_text())
    assert marker["signal"] == {0: "a signal on another process", 1: "SIGUSR1"}[marker["rank"]]
    assert _log(run)[-1]["preempted"] == "a signal on another process"  # the log is rank 0's, which got none
    assert 1 <= marker["step"] < STEPS and _losses(run)[-1][0] == marker["step"]
    # Resuming from here is the sbatch test's second half.


# Stand-ins for Slurm's commands, enough to run run_scripts/slurm/train.sbatch on this machine: srun starts its
# command once per node (SLURM_NODEID set) and exits with the highest status, as srun does; scancel --signal
# signals every process of that step, as Slurm does; scontrol names this host and records requeues.
FAKE_SLURM = {
    "srun": """#!/usr/bin/env bash
echo $$ > "$FAKE_SLURM_DIR/srun.pid"
while [[ "$1" == --* ]]; do shift; done
pids=()
for node in $(seq 0 $((SLURM_JOB_NUM_NODES - 1))); do SLURM_NODEID=$node "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid"; s=$?; [ "$s" -gt "$status" ] && status=$s; done
exit "$status"
""",
    "scancel": """#!/usr/bin/env bash
[ "$1" = --signal=USR1 ] || exit 1
descendants() { local child; for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done; }
kill -USR1 $(descendants "$(cat "$FAKE_SLURM_DIR/srun.pid")") 2>/dev/null
true
""",
    "scontrol": """#!/usr/bin/env bash
case "$1" in
  show) echo 127.0.0.1 ;;
  requeue) echo "$2" >> "$FAKE_SLURM_DIR/requeued" ;;
esac
""",
}


def test_sbatch_script_requeues_on_its_time_limit_signal_and_the_requeued_job_resumes_to_the_bit(
        setup, one_machine_two_processes, tmp_path):
    fake = tmp_path / "slurm"
    fake.mkdir()
    for name, text in FAKE_SLURM.items():
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    run = tmp_path / "run"
    run_script = tmp_path / "tiny_run.sh"  # what a script under run_scripts/ does, for the tiny config
    run_script.write_text(f'#!/usr/bin/env bash\nexec {REPO}/run_scripts/launch.sh {setup["config"]} {run} '
                          f'{" ".join(NO_EVAL)} "$@"\n')
    run_script.chmod(0o755)
    env = _env(PATH=f"{fake}{os.pathsep}{_env()['PATH']}", FAKE_SLURM_DIR=str(fake), SLURM_JOB_ID="4242",
               SLURM_JOB_NUM_NODES="2", SLURM_JOB_NODELIST="node[1-2]", SLURM_SUBMIT_DIR=str(REPO), NUM_GPUS="0",
               DATA_DIR=str(setup["data"]))

    def sbatch() -> subprocess.Popen:
        env["MAIN_PROCESS_PORT"] = str(free_port())
        with open(tmp_path / "slurm.out", "a") as out:
            return subprocess.Popen(["bash", "run_scripts/slurm/train.sbatch", str(run_script)], cwd=REPO, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)

    job = sbatch()
    try:
        deadline = time.monotonic() + 900
        while not _losses(run):
            assert job.poll() is None and time.monotonic() < deadline, (tmp_path / "slurm.out").read_text()[-4000:]
            time.sleep(0.05)
        job.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 does 120 s before the time limit
        status = job.wait(timeout=900)
    finally:
        _kill([job])
    output = (tmp_path / "slurm.out").read_text()
    assert status == PREEMPTED_EXIT_STATUS, output[-4000:]
    assert (fake / "requeued").read_text() == "4242\n", output[-4000:]
    assert 1 <= json.loads((run / PREEMPTED_MARKER).read_text())["step"] < STEPS

    job = sbatch()  # the requeued job: the same script, which always passes --resume
    try:
        assert job.wait(timeout=900) == 0, (tmp_path / "slurm.out").read_text()[-4000:]
    finally:
        _kill([job])
    assert (fake / "requeued").read_text() == "4242\n"  # done: not requeued again
    assert _losses(run) == one_machine_two_processes["losses"]
    _assert_same_weights(one_machine_two_processes["weights"], _weights(run))
