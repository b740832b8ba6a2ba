"""The smoke command's engine rows: each engine (one plain process, DeepSpeed ZeRO-2 and ZeRO-3, FSDP through the
configs under configs/accelerate/) trains the demo model, is preempted, resumes, and has its checkpoint evaluated.

Each row compares what the engine gives with what it must give, and FAILs, saying what differed, when:
- the preempted run did not stop at the step it was signalled at (exit 75, `preempted.json`);
- the resumed run's logged steps are not exactly 1..N (a resume that starts again from step 0 logs steps twice),
  its losses or its final trainable weights differ from an uninterrupted run's: bit for bit on the CPU, within
  CUDA_TOLERANCE on a GPU (kernels whose reductions use atomics are not bitwise repeatable there);
- `--evaluate` of `checkpoints/last/trainable` does not give the score and the predictions the resumed run itself
  logged at its end (a checkpoint that loaded nothing, or zeros, scores otherwise): equal on the CPU, within
  CUDA_SCORE_POINTS and CUDA_SAME_PREDICTIONS on a GPU;
- `checkpoints/last` is not much smaller than the frozen weights (it must hold the trainable ones only).
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from benchmarks.smoke_runs import DEMO_CONFIG, FAIL, PASS, REPO, Row, main_run, read_json, skipped, tail
from epalm.common.ports import free_port

ENGINES = {  # name -> accelerate config (None: one plain process)
    "plain": None,
    "zero2": REPO / "configs" / "accelerate" / "deepspeed_zero2.yaml",
    "zero3": REPO / "configs" / "accelerate" / "deepspeed_zero3.yaml",
    "fsdp": REPO / "configs" / "accelerate" / "fsdp.yaml",
}
CUDA_TOLERANCE = 1e-3  # of each tensor's (loss's) largest magnitude, resumed against uninterrupted, on a GPU
CUDA_SCORE_POINTS = 1.0  # --evaluate's score against the run's own, on a GPU (the CPU: equal)
CUDA_SAME_PREDICTIONS = 0.95  # share of identical predictions, on a GPU (the CPU: all)
TEST_SCORES = Path("eval") / "karpathy_test_metrics.json"
TEST_PREDICTIONS = Path("eval") / "karpathy_test_predictions.json"


def frozen_bytes() -> int:
    """The demo model's frozen weights in fp16: what a checkpoint that held them would weigh at least."""
    from epalm.models.param_count import build_on_meta, count_parameters
    from epalm.training.run_config import resolve_config

    cfg = resolve_config(["--config", str(DEMO_CONFIG)]).model
    cfg.lm.random_init, cfg.encoders["image"].checkpoint = True, None  # shapes only, on the meta device
    count = count_parameters(build_on_meta(cfg))
    return 2 * (count.total - count.trainable)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def logged_losses(run: Path) -> list[tuple[int, float]]:
    path = run / "train_log.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def trainable_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))


def _worst_difference(expected: float, got: float, scale: float) -> float:
    return abs(expected - got) / max(scale, 1e-12)


def resume_problems(straight: Path, resumed: Path, steps: int, exact: bool) -> list[str]:
    """What differs between the resumed run and the uninterrupted one: logged steps, losses, final weights."""
    problems = []
    want, got = logged_losses(straight), logged_losses(resumed)
    if [s for s, _ in got] != list(range(1, steps + 1)):
        problems.append(f"resumed run logged steps {[s for s, _ in got]}, not 1..{steps} once each")
    elif [s for s, _ in want] != list(range(1, steps + 1)):
        problems.append(f"uninterrupted run logged steps {[s for s, _ in want]}")
    else:
        scale = max(abs(loss) for _, loss in want)
        worst = max(_worst_difference(a, b, scale) for (_, a), (_, b) in zip(want, got))
        if (worst != 0.0) if exact else (worst > CUDA_TOLERANCE):
            problems.append(f"losses differ from the uninterrupted run's (largest relative difference {worst:.2g})")
    expected, weights = trainable_weights(straight), trainable_weights(resumed)
    if expected.keys() != weights.keys():
        return problems + [f"trainable tensors {sorted(weights)} against {sorted(expected)}"]
    differ = []
    for key, tensor in expected.items():
        difference = (tensor.float() - weights[key].float()).abs().max().item()
        scale = tensor.float().abs().max().item()
        if (difference != 0.0) if exact else (difference > CUDA_TOLERANCE * scale):
            differ.append(f"{key} (max |difference| {difference:.2g}, max |weight| {scale:.2g})")
    if differ:
        problems.append("final weights differ from the uninterrupted run's: " + ", ".join(differ))
    return problems


def evaluate_problems(resumed: Path, evaluation: Path, exact: bool) -> tuple[list[str], str]:
    """--evaluate of the resumed run's checkpoint against the score and predictions the run logged itself."""
    logged, scored = read_json(resumed / TEST_SCORES), read_json(evaluation / TEST_SCORES)
    problems = []
    if scored["num_predictions"] != scored["num_samples"]:
        problems.append(f"--evaluate gave {scored['num_predictions']} predictions for {scored['num_samples']} samples")
    ours, theirs = logged["main"]["value"] or 0.0, scored["main"]["value"] or 0.0
    want, got = read_json(resumed / TEST_PREDICTIONS), read_json(evaluation / TEST_PREDICTIONS)
    same = sum(a == b for a, b in zip(want, got)) / max(len(want), 1) if len(want) == len(got) else 0.0
    if (ours != theirs or same < 1.0) if exact else (abs(ours - theirs) > CUDA_SCORE_POINTS
                                                      or same < CUDA_SAME_PREDICTIONS):
        problems.append(f"--evaluate of checkpoints/last/trainable scored {theirs:.1f} with {100 * same:.0f} % of "
                        f"the predictions, where the run itself logged {ours:.1f}")
    return problems, f"--evaluate {theirs:.1f} = logged {ours:.1f} ({100 * same:.0f} % same predictions)"


def engine(name: str, args: argparse.Namespace, plan, data: Path, jobs: int = 1) -> list[Row]:
    """Uninterrupted run and a run preempted mid-way (side by side when `jobs` > 1), the resume, --evaluate."""
    from epalm.training.preemption import PREEMPTED_EXIT_STATUS, PREEMPTED_MARKER, SIGNAL_AT_STEP_ENV

    check = f"engine/{name}"
    if name == "fsdp" and args.device != "cuda":
        return [skipped(check, "needs CUDA", "accelerate applies FSDP on GPUs only (tests/test_fsdp.py drives "
                        "torch's FSDP on the CPU instead)")]
    config, out = ENGINES[name], args.out / "engines" / name

    def launch(stage: str, argv: list[str], env: dict | None = None) -> tuple[int, Path]:
        launcher = None
        if config is not None:  # each launch its own port: nothing else on the host may hold it
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                        "--num_processes", "1", "--num_machines", "1", "--main_process_port", str(free_port()),
                        "--mixed_precision", args.precision]
        return main_run(args.out, f"engine-{name}-{stage}", argv, launcher, env)

    common = ["--config", str(DEMO_CONFIG), "--data_dir", str(data),
              "--set", f"mixed_precision='{args.precision}'",  # quoted: YAML reads no as false
              "--set", "model.lm.dtype=auto", "--set", "model.encoders.image.dtype=auto",
              "--set", "train.feature_cache=false", "--set", "train.log_every=1", *plan.extra]
    steps, stop_at = plan.engine_steps, plan.engine_steps // 2
    train = [*common, "--set", "task.val_split=", "--set", f"train.max_steps={steps}",
             "--set", "train.checkpoint_every_steps=2"]
    straight, resumed, evaluation = out / "uninterrupted", out / "resumed", out / "evaluate"
    stages: list[Callable[[], tuple[int, Path]]] = [
        lambda: launch("uninterrupted", [*train, "--output_dir", str(straight)]),
        lambda: launch("preempted", [*train, "--output_dir", str(resumed)], {SIGNAL_AT_STEP_ENV: str(stop_at)})]
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, 2))) as pool:
        (code, log), (stopped, stop_log) = pool.map(lambda stage: stage(), stages)
    if code != 0:
        return [Row(check, FAIL, f"uninterrupted run: exit {code}: {tail(log)}")]
    marker = resumed / PREEMPTED_MARKER  # a launcher reports the run's 75 as 1: the marker says it was preempted
    if stopped not in (PREEMPTED_EXIT_STATUS, 1) or not marker.is_file() or read_json(marker)["step"] != stop_at:
        return [Row(check, FAIL, f"the run signalled at step {stop_at} did not stop there with its state saved: "
                    f"exit {stopped}: {tail(stop_log)}")]
    code, log = launch("resume", [*train, "--output_dir", str(resumed), "--resume"])
    if code != 0:
        return [Row(check, FAIL, f"resume: exit {code}: {tail(log)}")]
    code, log = launch("evaluate", [*common, "--output_dir", str(evaluation), "--evaluate",
                                    "--checkpoint", str(resumed / "checkpoints" / "last" / "trainable")])
    if code != 0:
        return [Row(check, FAIL, f"--evaluate: exit {code}: {tail(log)}")]
    exact = args.device != "cuda"
    problems = resume_problems(straight, resumed, steps, exact)
    evaluated, evaluation_facts = evaluate_problems(resumed, evaluation, exact)
    problems += evaluated
    frozen, size = frozen_bytes(), folder_bytes(resumed / "checkpoints" / "last")
    if size >= frozen / 2:
        problems.append(f"checkpoints/last {size} bytes against {frozen} bytes of frozen weights")
    if problems:
        return [Row(check, FAIL, "; ".join(problems))]
    comparison = "bit for bit" if exact else f"within {CUDA_TOLERANCE:g} relative"
    return [Row(check, PASS, f"{args.precision}: preempted at step {stop_at} (exit {stopped}), resumed to {steps}: "
                f"steps 1..{steps} once, losses and weights = uninterrupted run's {comparison}; {evaluation_facts}; "
                f"checkpoints/last {size / 1e6:.2f} MB (frozen weights {frozen / 1e6:.2f} MB)")]
