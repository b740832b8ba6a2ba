"""Distributed engines: trainable-only checkpoints and resume under DeepSpeed ZeRO-2/3 (one CPU process;
DeepSpeed forms no multi-process group on a CPU machine) and under two-process CPU DDP."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.tiny_run import build_tiny_setup, tiny_config

REPO = Path(__file__).resolve().parent.parent
deepspeed = pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("engines"))


def _launch(args: list[str], env: dict | None = None) -> None:
    result = subprocess.run(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def _deepspeed_config(tmp_path: Path, stage: int) -> Path:
    config = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "DEEPSPEED", "mixed_precision": "no",
              "num_machines": 1, "num_processes": 1, "use_cpu": False,
              "deepspeed_config": {"zero_stage": stage, "gradient_accumulation_steps": 1, "zero3_init_flag": False}}
    path = tmp_path / f"zero{stage}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_checkpoints_hold_only_trainable_weights_and_resume(setup, tmp_path, stage):
    config = str(tiny_config(setup, tmp_path / "c.yaml", max_steps=4, checkpoint_every_steps=2))
    run = tmp_path / "run"
    launch = ["accelerate", "launch", "--config_file", str(_deepspeed_config(tmp_path, stage)), "main.py",
              "--config", config, "--output_dir", str(run), "--set", "task.val_split=", "--set", "task.test_split="]
    _launch(launch)
    last = run / "checkpoints" / "last"
    trainable = load_file(str(last / "trainable" / "model.safetensors"))
    assert set(trainable) == {"connector.0.weight", "connector.0.bias", "connector.1.weight", "connector.1.bias",
                              "prompt_module.prefix_embedding.0.weight"}
    assert trainable["connector.0.weight"].shape == (32, 48)  # gathered whole, also under ZeRO-3
    (module_file,) = (last / "pytorch_model").glob("*model_states.pt")
    module = torch.load(module_file, map_location="cpu", weights_only=False)["module"]
    assert set(module) <= set(trainable), f"frozen weights in DeepSpeed's checkpoint: {set(module) - set(trainable)}"
    _launch(launch[:-4] + ["--resume", "--set", "train.max_steps=6", "--set", "task.val_split=",
                           "--set", "task.test_split="])
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][-2:] == [5, 6]


def test_two_process_ddp_resume(setup, tmp_path):
    config = str(tiny_config(setup, tmp_path / "c.yaml", max_steps=4, checkpoint_every_steps=2))
    run = tmp_path / "ddp"
    base = ["torchrun", "--nproc_per_node", "2", "main.py", "--config", config, "--output_dir", str(run),
            "--set", "task.val_split=", "--set", "task.test_split="]
    _launch(base, {"ACCELERATE_USE_CPU": "true"})
    first = load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))
    _launch(base + ["--resume", "--set", "train.max_steps=6"], {"ACCELERATE_USE_CPU": "true"})
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    second = load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))
    assert any(not torch.equal(first[k], second[k]) for k in first)
