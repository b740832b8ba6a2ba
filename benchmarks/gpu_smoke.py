"""One command for a lent GPU: what only a GPU can show, as one pass/fail table.

    bash run_scripts/gpu_smoke.sh                          # one CUDA GPU (H100/H200): under 8 minutes
    DEVICE=cpu SMOKE=tiny bash run_scripts/gpu_smoke.sh    # the same plumbing on the CPU, tiny sizes

Checks (each a row: pass / FAIL / skipped, with the reason):
- bench/<shape>: the benchmark shapes of benchmarks/gpu_check.sh (opt-2.7b training-step MFU, opt-6.7b-pt-l peak
  memory), with their targets as separate rows (met / NOT MET), random weights, nothing downloaded;
- demo/image_vqa: the demo's image VQA, blind and eP-ALM, fp16 with the frozen LM and ViT held in fp16;
  passes when eP-ALM beats the blind baseline by `--min-gain` accuracy points;
- engine/<name>: plain (one process, as DDP runs each), DeepSpeed ZeRO-2, ZeRO-3 and FSDP on one GPU, each with
  the demo model and the configs under configs/accelerate/: train with a checkpoint, resume it, evaluate
  `checkpoints/last/trainable` with --evaluate; the checkpoint must hold no frozen weight;
- generation/cached: KV-cached generation equals recomputation, on the trained demo model in the run's dtype and
  on tiny OPT / Llama / GPT-2 / Qwen2 models.

The table is printed and written to OUT/smoke.json and OUT/smoke.md; the exit status is 1 when a row FAILs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from epalm.common.errors import LaunchError

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "configs" / "demo" / "image_vqa.yaml"
ENGINES = {  # name -> accelerate config (None: one plain process)
    "plain": None,
    "zero2": REPO / "configs" / "accelerate" / "deepspeed_zero2.yaml",
    "zero3": REPO / "configs" / "accelerate" / "deepspeed_zero3.yaml",
    "fsdp": REPO / "configs" / "accelerate" / "fsdp.yaml",
}


@dataclass
class Row:
    check: str
    status: str  # "pass", "FAIL", "skipped: <why>", "met", "NOT MET"
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Sizes:
    """What the GPU run does, and the tiny version that proves the plumbing on a CPU."""

    shapes: list[str]
    shape_args: list[str]
    demo_data: dict  # build_image_dataset sizes
    demo_steps: int
    min_gain: float  # accuracy points eP-ALM must gain over blind
    engine_data: dict
    engine_steps: int = 4
    extra: list[str] = field(default_factory=list)  # --set overrides for every run


def sizes(mode: str) -> Sizes:
    if mode == "tiny":
        return Sizes(shapes=["tiny"], shape_args=["--repeats", "1", "--warmup", "0"],
                     demo_data=dict(n_train=48, n_val=8, n_test=12, questions_per_image=2), demo_steps=3,
                     min_gain=float("-inf"), engine_data=dict(n_train=48, n_val=8, n_test=12, questions_per_image=2),
                     extra=["--set", "train.batch_size=8", "--set", "eval.batch_size=8"])
    return Sizes(shapes=["opt-2.7b", "opt-6.7b-pt-l"], shape_args=["--repeats", "5", "--warmup", "2"],
                 demo_data=dict(n_train=6000, n_val=300, n_test=500, questions_per_image=3), demo_steps=300,
                 min_gain=20.0, engine_data=dict(n_train=256, n_val=32, n_test=64, questions_per_image=2))


def run_logged(command: list[str], log: Path, env: dict | None = None, timeout: float = 900) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        try:
            done = subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            handle.write(f"\ntimed out after {timeout} s\n")
            return 124
    return done.returncode


def timed(check: str, body: Callable[[], list[Row]]) -> list[Row]:
    start = time.time()
    try:
        rows = body()
    except Exception as error:  # one broken check must not hide the others' results
        rows = [Row(check, "FAIL", f"{type(error).__name__}: {error}")]
    rows[0].seconds = round(time.time() - start, 1)
    return rows


def tail(log: Path, lines: int = 3) -> str:
    text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    return " | ".join(line.strip()[-160:] for line in text[-lines:])


# --- checks ------------------------------------------------------------------------------------------------
def benchmark(shape: str, args: argparse.Namespace, plan: Sizes) -> list[Row]:
    out = args.out / "bench" / f"{shape}.json"
    log = args.out / "logs" / f"bench-{shape}.log"
    dtype = "float16" if args.device == "cuda" else "float32"
    code = run_logged([sys.executable, "-m", "benchmarks.run", "--shape", shape, "--device", args.device,
                       "--dtype", dtype, *plan.shape_args, "--out", str(out)], log)
    if code != 0:
        return [Row(f"bench/{shape}", "FAIL", f"exit {code}: {tail(log)}")]
    result = json.loads(out.read_text())
    mode = result["modes"].get("train_encode", {})
    facts = [f"{k} {mode[k]:.3g}" for k in ("mfu", "peak_memory_mb", "samples_per_s") if mode.get(k) is not None]
    rows = [Row(f"bench/{shape}", "pass", ", ".join(facts) or "measured")]
    for target in result.get("targets", []):
        status = "skipped: needs CUDA" if target["met"] is None else "met" if target["met"] else "NOT MET"
        rows.append(Row(f"target/{shape}/{target['key']}", status, f"value {target['value']}, bound {target['bound']}"))
    return rows


def build_data(folder: Path, spec: dict) -> Path:
    from epalm.demo.synthetic.build import build_image_dataset

    build_image_dataset(folder, seed=0, progress=False, **spec)
    return folder


def main_run(args: argparse.Namespace, name: str, argv: list[str],
             launcher: list[str] | None = None) -> tuple[int, Path]:
    log = args.out / "logs" / f"{name}.log"
    command = (launcher or [sys.executable]) + ["main.py", *argv]
    return run_logged(command, log, env={"TOKENIZERS_PARALLELISM": "false"}), log


def demo_vqa(args: argparse.Namespace, plan: Sizes) -> list[Row]:
    """Blind and eP-ALM on the demo's image VQA, the frozen LM and ViT in the run's half precision (`auto`)."""
    data = build_data(args.out / "data" / "demo", plan.demo_data)
    scores = {}
    for variant, extra in (("blind", ["--set", "model.visual=false"]), ("epalm", [])):
        run = args.out / "demo" / variant
        code, log = main_run(args, f"demo-{variant}", [
            "--config", str(DEMO_CONFIG), "--data_dir", str(data), "--output_dir", str(run),
            "--set", f"train.max_steps={plan.demo_steps}", "--set", "model.lm.dtype=auto",
            "--set", "model.encoders.image.dtype=auto", "--set", f"train.feature_cache_dir={args.out / 'feature_cache'}",
            *plan.extra, *extra])
        if code != 0:
            return [Row("demo/image_vqa", "FAIL", f"{variant}: exit {code}: {tail(log)}")]
        metrics = json.loads((run / "eval" / "karpathy_test_metrics.json").read_text())
        scores[variant] = metrics["main"]["value"] or 0.0
    gain = scores["epalm"] - scores["blind"]
    status = "pass" if gain >= plan.min_gain else "FAIL"
    bound = "" if plan.min_gain == float("-inf") else f" (needs >= +{plan.min_gain:g})"
    return [Row("demo/image_vqa", status, f"{plan.demo_steps} steps, LM fp16: blind {scores['blind']:.1f}, "
                f"eP-ALM {scores['epalm']:.1f}, gain {gain:+.1f}{bound}")]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def engine(name: str, port: int, args: argparse.Namespace, plan: Sizes, data: Path) -> list[Row]:
    """Train (checkpoint every 2 steps), resume for 2 more steps, evaluate checkpoints/last/trainable."""
    check = f"engine/{name}"
    if name == "fsdp" and args.device != "cuda":
        return [Row(check, "skipped: needs CUDA", "accelerate applies FSDP on GPUs only (tests/test_fsdp.py drives "
                    "torch's FSDP on the CPU instead)")]
    config = ENGINES[name]
    launcher = None
    if config is not None:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                    "--num_processes", "1", "--num_machines", "1", "--main_process_port", str(port),
                    "--mixed_precision", args.precision]
    run = args.out / "engines" / name
    common = ["--config", str(DEMO_CONFIG), "--data_dir", str(data), "--set", f"mixed_precision='{args.precision}'",  # quoted: YAML reads no as false
              "--set", "model.lm.dtype=auto",
              "--set", "model.encoders.image.dtype=auto", "--set", "train.feature_cache=false", "--set", "train.log_every=1",
              *plan.extra]
    steps = plan.engine_steps
    train = [*common, "--output_dir", str(run), "--set", "task.val_split=", "--set", "task.test_split=",
             "--set", f"train.max_steps={steps}", "--set", "train.checkpoint_every_steps=2"]
    code, log = main_run(args, f"engine-{name}-train", train, launcher)
    if code != 0:
        return [Row(check, "FAIL", f"train: exit {code}: {tail(log)}")]
    code, log = main_run(args, f"engine-{name}-resume", train + ["--resume", "--set", f"train.max_steps={steps + 2}"],
                         launcher)
    if code != 0:
        return [Row(check, "FAIL", f"resume: exit {code}: {tail(log)}")]
    logged = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    if logged[-2:] != [steps + 1, steps + 2]:
        return [Row(check, "FAIL", f"resume did not continue at step {steps + 1}: logged steps {logged}")]
    last = run / "checkpoints" / "last"
    evaluation = args.out / "engines" / f"{name}-eval"
    code, log = main_run(args, f"engine-{name}-evaluate", [*common, "--output_dir", str(evaluation), "--evaluate",
                                                           "--checkpoint", str(last / "trainable")], launcher)
    if code != 0:
        return [Row(check, "FAIL", f"--evaluate: exit {code}: {tail(log)}")]
    metrics = json.loads((evaluation / "eval" / "karpathy_test_metrics.json").read_text())
    frozen = frozen_bytes()
    size = folder_bytes(last)
    if metrics["num_predictions"] != metrics["num_samples"] or size >= frozen / 2:
        return [Row(check, "FAIL", f"{metrics['num_predictions']}/{metrics['num_samples']} predictions; "
                    f"checkpoints/last {size} bytes against {frozen} bytes of frozen weights")]
    return [Row(check, "pass", f"{args.precision}: steps {logged}, resumed at {steps + 1}; --evaluate of "
                f"last/trainable: {metrics['main']['value']:.1f} on {metrics['num_samples']}; checkpoints/last "
                f"{size / 1e6:.2f} MB (frozen weights {frozen / 1e6:.2f} MB)")]


def frozen_bytes() -> int:
    """The demo model's frozen weights in fp16: what a checkpoint that held them would weigh at least."""
    from epalm.models.param_count import build_on_meta, count_parameters
    from epalm.training.run_config import resolve_config

    cfg = resolve_config(["--config", str(DEMO_CONFIG)]).model
    cfg.lm.random_init, cfg.encoders["image"].checkpoint = True, None  # shapes only, on the meta device
    model = build_on_meta(cfg)
    count = count_parameters(model)
    return 2 * (count.total - count.trainable)


def cached_generation(args: argparse.Namespace) -> list[Row]:
    """Cached and recomputed generation token for token: the trained demo model (fp16 on CUDA) and tiny models."""
    import torch

    from benchmarks.workloads import generation, synthetic_inputs
    from epalm.models.checkpoint import load_checkpoint
    from tests.tiny_models import TINY_LMS, images, text_batch, tiny_model

    device = torch.device(args.device)
    half = torch.float16 if args.device == "cuda" else torch.float32
    details, ok = [], True
    trained = args.out / "demo" / "epalm" / "checkpoints" / "last" / "trainable"
    if trained.is_dir():
        model, _ = load_checkpoint(trained, load_tokenizer_if_missing=False)
        model.lm.to(half)
        model.encoder_for().to(half)
        model.to(device)
        inputs = synthetic_inputs(model, 16, 8, device)
        runs = [generation(model, inputs, new_tokens=12, num_beams=beams, use_cache=cache)()
                for beams in (1, 3) for cache in (True, False)]
        same = [torch.equal(runs[0], runs[1]), torch.equal(runs[2], runs[3])]
        ok &= all(same)
        details.append(f"demo model {str(half).removeprefix('torch.')}: greedy {'==' if same[0] else '!='}, "
                       f"3 beams {'==' if same[1] else '!='}")
    else:
        details.append("no trained demo model (demo/image_vqa did not run)")
    for kind in ("opt", "llama", "gpt2", "qwen2"):
        assert kind in TINY_LMS
        model = tiny_model(kind).to(device)
        ids, mask = text_batch(batch=3, length=5, left_pad=True)
        kwargs = dict(media=images(3).to(device), max_new_tokens=8, min_new_tokens=8, num_beams=3)
        cached = model.generate(ids.to(device), mask.to(device), use_cache=True, **kwargs)
        recomputed = model.generate(ids.to(device), mask.to(device), use_cache=False, **kwargs)
        ok &= bool(torch.equal(cached, recomputed))
        details.append(f"tiny {kind} fp32 {'==' if torch.equal(cached, recomputed) else '!='}")
    return [Row(f"generation/cached ({args.device})", "pass" if ok else "FAIL", "; ".join(details))]


# --- the table ---------------------------------------------------------------------------------------------
def format_table(rows: list[Row]) -> str:
    lines = ["| check | result | seconds | detail |", "|---|---|---|---|"]
    cell = lambda text: " ".join(text.replace("|", "/").split())  # noqa: E731 (one line per row)
    lines += [f"| {r.check} | {r.status} | {r.seconds:g} | {cell(r.detail)} |" for r in rows]
    return "\n".join(lines)


def machine(device: str) -> dict:
    import torch

    facts = {"device": device, "torch": torch.__version__, "python": sys.version.split()[0]}
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(0)
    for package in ("transformers", "timm", "accelerate", "deepspeed"):
        try:
            facts[package] = __import__(package).__version__
        except ImportError:
            facts[package] = None
    return facts


EXAMPLES = """examples:
  bash run_scripts/gpu_smoke.sh
  DEVICE=cpu SMOKE=tiny bash run_scripts/gpu_smoke.sh --only engines --precision bf16"""
SMOKE_FAILED_STATUS = 1  # a row FAILed (the table says which)


def argument_parser() -> argparse.ArgumentParser:
    from epalm.common.command_line import add_debug_flag, command_parser

    parser = command_parser("python -m benchmarks.gpu_smoke", __doc__, EXAMPLES)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cuda (default) or cpu")
    parser.add_argument("--sizes", default="full", choices=("full", "tiny"),
                        help="full: the GPU shapes (default); tiny: the CPU plumbing check")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_smoke", metavar="DIR",
                        help="where runs, smoke.json and smoke.md go (default outputs/gpu_smoke)")
    parser.add_argument("--only", nargs="+", default=["bench", "demo", "engines", "generation"],
                        choices=("bench", "demo", "engines", "generation"), help="only these groups of rows")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES),
                        help="only these engines (default: all)")
    parser.add_argument("--precision", choices=("fp16", "bf16", "no"), default=None,
                        help="the engine runs' mixed precision (default: fp16 on CUDA, no on the CPU)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> list[Row]:
    args = argument_parser().parse_args(argv)
    args.precision = args.precision or ("fp16" if args.device == "cuda" else "no")
    plan = sizes(args.sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise LaunchError("--device cuda but no CUDA GPU is visible (DEVICE=cpu SMOKE=tiny for the CPU)")
    start = time.time()
    if "bench" in args.only:  # alone on the GPU: its timings must not share it
        for shape in plan.shapes:
            rows += timed(f"bench/{shape}", lambda shape=shape: benchmark(shape, args, plan))
    # the demo task runs beside the engines (small models: they share the GPU); the engines run one after the
    # other (two DeepSpeed processes at once hang on a CPU machine, whose DeepSpeed talks through shared memory)
    jobs: list[Callable[[], list[Row]]] = []
    if "demo" in args.only:
        jobs.append(lambda: timed("demo/image_vqa", lambda: demo_vqa(args, plan)))
    if "engines" in args.only:
        def engines() -> list[Row]:
            data = build_data(args.out / "data" / "engines", plan.engine_data)
            return [row for index, name in enumerate(args.engines)
                    for row in timed(f"engine/{name}", lambda: engine(name, 29600 + index, args, plan, data))]
        jobs.append(engines)
    with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
        for result in pool.map(lambda job: job(), jobs):
            rows += result
    if "generation" in args.only:
        rows += timed("generation/cached", lambda: cached_generation(args))
    table = format_table(rows)
    print(table)
    summary = {"machine": machine(args.device), "sizes": args.sizes, "seconds": round(time.time() - start, 1),
               "rows": [asdict(r) for r in rows]}
    from epalm.common.atomic_io import write_text_atomic

    write_text_atomic(args.out / "smoke.json", json.dumps(summary, indent=2))
    write_text_atomic(args.out / "smoke.md", f"{json.dumps(summary['machine'])}\n\n{table}\n")
    print(f"\n{len(rows)} rows in {summary['seconds']} s; written {args.out / 'smoke.md'}")
    return rows


def main_with_status(argv: list[str]) -> None:
    if any(row.status == "FAIL" for row in main(argv)):
        raise SystemExit(SMOKE_FAILED_STATUS)


if __name__ == "__main__":
    from epalm.common.command_line import run_command

    sys.exit(run_command(main_with_status))
