"""What the shell launchers hand to `accelerate launch` (a stand-in that records its arguments): a port of the
job's own in every launch, one machine too; the evaluation scripts' compatibility overlay for released files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_multi_machine import FAKE_SLURM

REPO = Path(__file__).resolve().parent.parent
EVAL_SCRIPTS = sorted(REPO.glob("run_scripts/*/*/*_eval.sh"))
FAKE_ACCELERATE = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_OUT/accelerate.$$.args"
"""


@pytest.fixture
def fake(tmp_path) -> Path:
    """A folder of stand-ins put first on PATH: accelerate (records its arguments), srun, scancel, scontrol."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in {"accelerate": FAKE_ACCELERATE, **FAKE_SLURM}.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def _env(fake: Path, **extra: str) -> dict:
    path = f"{fake}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAIN_PROCESS_", "SLURM_", "NUM_"))}
    return {**env, "PATH": path, "FAKE_OUT": str(fake), "FAKE_SLURM_DIR": str(fake), "NUM_GPUS": "2", **extra}


def _launches(fake: Path) -> list[list[str]]:
    """The argument lists `accelerate` was called with, oldest first, and forgets them."""
    files = sorted(fake.glob("accelerate.*.args"), key=lambda f: f.stat().st_mtime_ns)
    calls = [f.read_text().splitlines() for f in files]
    for f in files:
        f.unlink()
    return calls


def _port(call: list[str]) -> int:
    assert call.count("--main_process_port") == 1, call
    return int(call[call.index("--main_process_port") + 1])


def _launch_sh(fake: Path, tmp_path: Path, **env: str) -> list[str]:
    done = subprocess.run(["bash", "run_scripts/launch.sh", "configs/demo/image_vqa.yaml", str(tmp_path / "run")],
                          cwd=REPO, env=_env(fake, **env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (call,) = _launches(fake)
    return call


def test_one_machine_launch_gets_the_jobs_port_or_a_free_one(fake, tmp_path):
    assert _port(_launch_sh(fake, tmp_path, MAIN_PROCESS_PORT="23456")) == 23456
    ports = {_port(_launch_sh(fake, tmp_path)) for _ in range(2)}
    assert len(ports) == 2 and 29500 not in ports  # two one-machine jobs on one host do not meet on 29500


def test_two_machine_launch_keeps_its_port(fake, tmp_path):
    call = _launch_sh(fake, tmp_path, NUM_MACHINES="2", MACHINE_RANK="1", MAIN_PROCESS_IP="10.0.0.1",
                      MAIN_PROCESS_PORT="23457")
    assert _port(call) == 23457 and call[call.index("--machine_rank") + 1] == "1"


def test_one_node_slurm_jobs_each_pass_their_own_port(fake, tmp_path):
    """run_scripts/slurm/train.sbatch on one node: the port derived from the job id reaches accelerate."""
    run_script = tmp_path / "run.sh"
    run_script.write_text(f'#!/usr/bin/env bash\nexec {REPO}/run_scripts/launch.sh configs/demo/image_vqa.yaml '
                          f'{tmp_path / "run"} "$@"\n')
    run_script.chmod(0o755)
    ports = []
    for job in ("4242", "4243"):
        env = _env(fake, SLURM_JOB_ID=job, SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="node1",
                   SLURM_SUBMIT_DIR=str(REPO))
        done = subprocess.run(["bash", "run_scripts/slurm/train.sbatch", str(run_script)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        (call,) = _launches(fake)
        assert call[-1] == "--resume"
        ports.append(_port(call))
    assert ports == [20000 + 4242, 20000 + 4243]


def test_lm_size_sweep_launches_with_a_port_of_its_own(fake, tmp_path):
    """run_scripts/ablation/sweep.sh hands epalm.studies.ablation a launcher string: it names a port."""
    fake_python = fake / "python"  # records the sweep's command line instead of running the sweep
    fake_python.write_text(f'#!/usr/bin/env bash\n[ "$1" = -c ] && exec {sys.executable} "$@"\n'
                           'printf \'%s\\n\' "$@" > "$FAKE_OUT/accelerate.$$.args"\n')
    fake_python.chmod(0o755)
    done = subprocess.run(["bash", "run_scripts/ablation/sweep.sh", "configs/ablation/lm_sizes_vqa.yaml",
                           str(tmp_path / "sweep"), "opt-125m"], cwd=REPO, env=_env(fake, MAIN_PROCESS_PORT="23458"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (call,) = _launches(fake)
    launcher = call[call.index("--launcher") + 1].split()
    assert _port(launcher) == 23458


@pytest.mark.parametrize("script", EVAL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO / "run_scripts")))
def test_eval_scripts_score_every_reference_file_with_the_compatibility_overlay(fake, tmp_path, script):
    """A released checkpoint (.pth, .pt, .bin) gets configs/compat/reference_eval*.yaml; a run's folder does not."""
    assert len(EVAL_SCRIPTS) == 10
    overlays = {}
    for checkpoint in ("released.pth", "released.pt", "pytorch_model.bin", "outputs/run/best"):
        env = _env(fake, NUM_GPUS="1", CHECKPOINT=str(tmp_path / checkpoint), OUTPUT_DIR=str(tmp_path / "out"))
        done = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        (call,) = _launches(fake)
        assert call[call.index("--checkpoint") + 1] == str(tmp_path / checkpoint)
        configs = [call[i + 1] for i, arg in enumerate(call) if arg == "--config"]
        overlays[checkpoint] = [c for c in configs if c.startswith("configs/compat/")]
    assert overlays["outputs/run/best"] == []
    for checkpoint in ("released.pth", "released.pt", "pytorch_model.bin"):
        (overlay,) = overlays[checkpoint]
        assert (REPO / overlay).is_file() and Path(overlay).name.startswith("reference_eval"), overlay
