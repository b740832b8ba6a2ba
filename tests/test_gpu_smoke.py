"""The GPU smoke command (benchmarks/gpu_smoke.py) in its tiny CPU mode: every row passes with real gates, and each
check fails, with exit status 1, when it is fed what it exists to catch: a resume that starts again from step 0, a
checkpoint of zeros, an eP-ALM that does not see the image, a KV cache that changes the tokens, a missed target."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import epalm.training.run as entry
from benchmarks import gpu_smoke, smoke_engines
from benchmarks.smoke_engines import evaluate_problems, resume_problems
from epalm.models.epalm import EPALM

REPO = Path(__file__).resolve().parent.parent
TINY = ["--device", "cpu", "--sizes", "tiny"]


def _rows(out: Path) -> dict[str, dict]:
    return {row["check"]: row for row in json.loads((out / "smoke.json").read_text())["rows"]}


@pytest.fixture(scope="module")
def tiny_smoke(tmp_path_factory) -> Path:
    """run_scripts/gpu_smoke.sh in its CPU mode: every group (the FSDP row and the plain engine; DeepSpeed's
    engines are tested in tests/test_engines.py)."""
    out = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "DEVICE": "cpu", "SMOKE": "tiny", "OUT": str(out), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "run_scripts" / "gpu_smoke.sh"), "--engines", "plain", "fsdp"],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_tiny_smoke_passes_every_row_it_runs_and_skips_the_rest(tiny_smoke):
    rows = _rows(tiny_smoke)
    assert {check: row["status"] for check, row in rows.items()} == {
        "bench/tiny": "pass", "demo/image_vqa": "pass", "engine/plain": "pass", "engine/fsdp": "skipped: needs CUDA",
        "generation/cached demo model (cpu)": "pass", "generation/cached tiny LMs (cpu)": "pass"}
    assert "needs >= +15" in rows["demo/image_vqa"]["detail"]
    assert "steps 1..6 once" in rows["engine/plain"]["detail"] and "bit for bit" in rows["engine/plain"]["detail"]
    assert "float32 32/32, bfloat16 32/32" in rows["generation/cached demo model (cpu)"]["detail"]
    summary = json.loads((tiny_smoke / "smoke.json").read_text())
    assert summary["failed"] == [] and summary["machine"]["device"] == "cpu"
    assert "| demo/image_vqa | pass |" in (tiny_smoke / "smoke.md").read_text()


def test_a_checkpoint_of_zeros_fails_the_resume_and_evaluate_comparisons(tiny_smoke, tmp_path, monkeypatch):
    engine = tiny_smoke / "engines" / "plain"
    assert resume_problems(engine / "uninterrupted", engine / "resumed", 6, exact=True) == []
    zeroed = tmp_path / "resumed"
    shutil.copytree(engine / "resumed", zeroed)
    weights = zeroed / "checkpoints" / "last" / "trainable" / "model.safetensors"
    save_file({k: torch.zeros_like(v) for k, v in load_file(str(weights)).items()}, str(weights))
    (problem,) = resume_problems(engine / "uninterrupted", zeroed, 6, exact=True)
    assert problem.startswith("final weights differ from the uninterrupted run's")
    # --evaluate of the zeros, with the arguments the smoke gave the engine's own --evaluate
    argv = (engine.parent.parent / "logs" / "engine-plain-evaluate.log").read_text().splitlines()[0].split()
    argv = argv[argv.index("main.py") + 1:]
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "evaluate")
    argv[argv.index("--checkpoint") + 1] = str(weights.parent)
    monkeypatch.chdir(REPO)
    entry.main(argv)
    problems, _ = evaluate_problems(engine / "resumed", tmp_path / "evaluate", exact=True)
    assert len(problems) == 1 and "--evaluate of checkpoints/last/trainable scored" in problems[0]
    assert evaluate_problems(engine / "resumed", engine / "evaluate", exact=True)[0] == []


def test_a_resume_that_starts_again_from_step_0_fails_the_engine_row_and_the_exit_status(tmp_path, monkeypatch):
    """The resume run loses its --resume (as a resume that silently starts from scratch would): the steps it logs
    after the preempted ones are 1..6 again, which the row reports, and the smoke exits with 1."""
    real = smoke_engines.main_run

    def without_resume(out, name, argv, launcher=None, env=None):
        return real(out, name, [arg for arg in argv if arg != "--resume"], launcher, env)

    monkeypatch.setattr(smoke_engines, "main_run", without_resume)
    with pytest.raises(SystemExit) as exit_status:
        gpu_smoke.main_with_status([*TINY, "--only", "engines", "--engines", "plain", "--out", str(tmp_path)])
    assert exit_status.value.code == gpu_smoke.SMOKE_FAILED_STATUS == 1
    row = _rows(tmp_path)["engine/plain"]
    assert row["status"] == "FAIL" and "resumed run logged steps [1, 2, 3, 1, 2, 3, 4, 5, 6]" in row["detail"]


def test_an_epalm_that_does_not_see_the_image_fails_the_demo_gain(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_smoke, "DEMO_VARIANTS", (("blind", ("model.visual=false",)),
                                                     ("epalm", ("model.visual=false",))))
    tiny = gpu_smoke.sizes("tiny")
    monkeypatch.setattr(gpu_smoke, "sizes", lambda mode: gpu_smoke.Sizes(**{
        **tiny.__dict__, "demo_steps": 3, "demo_data": dict(n_train=48, n_val=4, n_test=12, questions_per_image=3)}))
    with pytest.raises(SystemExit):
        gpu_smoke.main_with_status([*TINY, "--only", "demo", "--out", str(tmp_path)])
    row = _rows(tmp_path)["demo/image_vqa"]
    assert row["status"] == "FAIL" and "gain +0.0 (needs >= +15)" in row["detail"]


def test_cached_generation_that_changes_a_token_fails_and_a_demo_that_did_not_run_is_skipped(tmp_path, monkeypatch):
    real = EPALM.generate

    def broken_cache(self, *args, use_cache=True, **kwargs):
        tokens = real(self, *args, use_cache=use_cache, **kwargs)
        if use_cache:  # the last token of the first sequence comes out of the cache wrong
            tokens = tokens.clone()
            tokens[0, -1] = (tokens[0, -1] + 1) % self.lm.model.config.vocab_size
        return tokens

    monkeypatch.setattr(EPALM, "generate", broken_cache)
    with pytest.raises(SystemExit):
        gpu_smoke.main_with_status([*TINY, "--only", "generation", "--out", str(tmp_path)])
    rows = _rows(tmp_path)
    assert rows["generation/cached demo model (cpu)"]["status"] == "skipped: demo/image_vqa did not run"
    tiny = rows["generation/cached tiny LMs (cpu)"]
    assert tiny["status"] == "FAIL" and "float32 8/12" in tiny["detail"]


def _fake_benchmark(met: bool):
    """The benchmark's subprocess replaced by a result whose one target is met or missed."""
    def run_logged(command, log, env=None, timeout=900):
        out = Path(command[command.index("--out") + 1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"shape": {"num_beams": 3}, "modes": {"train_encode": {"mfu": 0.31}},
                                   "targets": [{"key": "train_encode.mfu", "value": 0.31, "bound": ">= 0.4",
                                                "met": met}]}))
        return 0
    return run_logged


@pytest.mark.parametrize("information", [False, True])
def test_a_missed_target_exits_1_unless_targets_are_information(tmp_path, monkeypatch, information):
    monkeypatch.setattr(gpu_smoke, "run_logged", _fake_benchmark(met=False))
    argv = [*TINY, "--only", "bench", "--out", str(tmp_path)] + (["--targets_as_information"] if information else [])
    if information:
        gpu_smoke.main_with_status(argv)
    else:
        with pytest.raises(SystemExit) as exit_status:
            gpu_smoke.main_with_status(argv)
        assert exit_status.value.code == 1
    rows = _rows(tmp_path)
    assert rows["bench/tiny"]["status"] == "pass"
    assert rows["target/tiny/train_encode.mfu"]["status"] == ("NOT MET (information)" if information else "NOT MET")
    monkeypatch.setattr(gpu_smoke, "run_logged", _fake_benchmark(met=True))
    gpu_smoke.main_with_status(argv)  # met: exit 0
