"""Distributed engines: trainable-only checkpoints, and a preempted run resumed to the bit of an uninterrupted one,
under DeepSpeed ZeRO-2/3 (one CPU process; DeepSpeed forms no multi-process group on a CPU machine) and under
two-process CPU DDP."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from benchmarks.smoke_engines import resume_problems
from epalm.common.ports import free_port
from epalm.training.preemption import PREEMPTED_EXIT_STATUS, PREEMPTED_MARKER, SIGNAL_AT_STEP_ENV
from tests.tiny_run import build_tiny_setup, tiny_config
from tests.zero3_probe import build, facts

REPO = Path(__file__).resolve().parent.parent
deepspeed = pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("engines"))


def _launch(args: list[str], env: dict | None = None, expect: tuple[int, ...] = (0,)) -> int:
    result = subprocess.run(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            capture_output=True, text=True, timeout=900)
    if result.returncode not in expect:
        raise AssertionError(f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.returncode


def _deepspeed_config(tmp_path: Path, stage: int) -> Path:
    config = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "DEEPSPEED", "mixed_precision": "no",
              "num_machines": 1, "num_processes": 1, "use_cpu": False, "main_process_port": free_port(),  # not 29500: another job may hold it
              "deepspeed_config": {"zero_stage": stage, "gradient_accumulation_steps": 1, "zero3_init_flag": False}}
    path = tmp_path / f"zero{stage}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_checkpoints_hold_only_trainable_weights_and_resume_to_the_bit(setup, tmp_path, stage):
    """Preempted at step 3 of 6 (the trainer's own SIGUSR1), resumed: the steps logged are 1..6 once each, and the
    losses and final trainable weights those of an uninterrupted run, bit for bit (a resume that started again
    from step 0 would log steps twice; one that lost the weights or AdamW's moments would end elsewhere)."""
    config = str(tiny_config(setup, tmp_path / "c.yaml", max_steps=6, checkpoint_every_steps=2))
    launcher = ["accelerate", "launch", "--config_file", str(_deepspeed_config(tmp_path, stage)), "main.py",
                "--config", config, "--set", "task.val_split=", "--set", "task.test_split="]
    straight, run = tmp_path / "straight", tmp_path / "run"
    _launch(launcher + ["--output_dir", str(straight)])
    # accelerate's launcher reports the run's 75 as 1; the marker says it was preempted
    _launch(launcher + ["--output_dir", str(run)], {SIGNAL_AT_STEP_ENV: "3"}, expect=(1, PREEMPTED_EXIT_STATUS))
    assert json.loads((run / PREEMPTED_MARKER).read_text())["step"] == 3
    last = run / "checkpoints" / "last"
    trainable = load_file(str(last / "trainable" / "model.safetensors"))
    assert set(trainable) == {"connectors.image.0.weight", "connectors.image.0.bias", "connectors.image.1.weight",
                              "connectors.image.1.bias", "prompt_module.prefix_embedding.0.weight"}
    assert trainable["connectors.image.0.weight"].shape == (32, 48)  # gathered whole, also under ZeRO-3
    (module_file,) = (last / "pytorch_model").glob("*model_states.pt")
    module = torch.load(module_file, map_location="cpu", weights_only=False)["module"]
    assert set(module) <= set(trainable), f"frozen weights in DeepSpeed's checkpoint: {set(module) - set(trainable)}"
    _launch(launcher + ["--output_dir", str(run), "--resume"])
    # the GPU smoke's own comparison, exact: steps 1..6 once each, losses and final weights bit for bit
    assert resume_problems(straight, run, 6, exact=True) == []
    resumed = load_file(str(last / "trainable" / "model.safetensors"))
    assert not all(torch.equal(trainable[k], resumed[k]) for k in trainable)  # the resumed steps changed them


def test_zero3_reads_whole_frozen_weights(tmp_path, monkeypatch):
    """The demo's image VQA model (its prompt starts from vocabulary rows) under ZeRO-3, where transformers builds
    the LM partitioned (accelerate's plugin registers the config with it even with zero3_init_flag false): the
    prompt and the parameter counts must be those of the same build without DeepSpeed."""
    monkeypatch.chdir(REPO)  # the demo config names its weights relative to the repository
    argv = ["--config", "configs/demo/image_vqa.yaml"]
    out = tmp_path / "zero3.safetensors"
    _launch(["accelerate", "launch", "--config_file", str(_deepspeed_config(tmp_path, 3)), "-m", "tests.zero3_probe",
             str(out), *argv])
    with safe_open(str(out), "pt") as handle:
        zero3 = {"prompt": handle.get_tensor("prompt"), **json.loads(handle.metadata()["facts"])}
    tensors, plain = facts(build(argv, with_accelerator=False))
    assert zero3["partitioned"] == {"embeddings": True, "layers": True}  # the ZeRO-3 build really was partitioned
    assert plain["partitioned"] == {"embeddings": False, "layers": False}
    assert torch.equal(zero3["prompt"], tensors["prompt"])  # the same rows of the same table, same seed
    assert zero3["counts"] == plain["counts"]
    assert plain["counts"]["lm"]["total"] > 900_000 and zero3["counts"]["lm"]["trainable"] == 0


def test_zero3_best_weights_and_evaluation_only_run(setup, tmp_path):
    """--save_best loads best/ into the partitioned model before testing; --evaluate prepares the partitioned model
    with DeepSpeed's engine (nothing else would gather its weights): both score the test split the same."""
    config = str(tiny_config(setup, tmp_path / "c.yaml", max_steps=3))
    zero3 = str(_deepspeed_config(tmp_path, 3))
    run = tmp_path / "run"
    _launch(["accelerate", "launch", "--config_file", zero3, "main.py", "--config", config, "--output_dir", str(run),
             "--save_best", "--set", "model.prompt_init=vocab"])
    _launch(["accelerate", "launch", "--config_file", zero3, "main.py", "--config", config, "--output_dir",
             str(tmp_path / "eval"), "--evaluate", "--checkpoint", str(run / "best")])
    trained = json.loads((run / "eval" / "karpathy_test_metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "eval" / "karpathy_test_metrics.json").read_text())
    assert trained["num_predictions"] == evaluated["num_predictions"] == trained["num_samples"]
    assert json.loads((run / "eval" / "karpathy_test_predictions.json").read_text()) == json.loads(
        (tmp_path / "eval" / "eval" / "karpathy_test_predictions.json").read_text())


def test_two_process_ddp_resume(setup, tmp_path):
    config = str(tiny_config(setup, tmp_path / "c.yaml", max_steps=4, checkpoint_every_steps=2))
    run = tmp_path / "ddp"
    base = ["torchrun", "--standalone", "--nproc_per_node", "2", "main.py", "--config", config, "--output_dir", str(run),
            "--set", "task.val_split=", "--set", "task.test_split="]
    _launch(base, {"ACCELERATE_USE_CPU": "true"})
    first = load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))
    _launch(base + ["--resume", "--set", "train.max_steps=6"], {"ACCELERATE_USE_CPU": "true"})
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    second = load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))
    assert any(not torch.equal(first[k], second[k]) for k in first)
