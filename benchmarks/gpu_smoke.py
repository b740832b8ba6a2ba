"""One command for a lent GPU: what only a GPU can show, as one table of checks that fail when the thing they check
is broken.

    bash run_scripts/gpu_smoke.sh                          # one CUDA GPU (H100/H200): about 6 minutes
    DEVICE=cpu SMOKE=tiny bash run_scripts/gpu_smoke.sh    # the same checks on the CPU, tiny sizes

Rows (pass / FAIL, met / NOT MET, or `skipped: <why>`, never `pass` for what did not run):
- bench/<shape>: the benchmark shapes of benchmarks/gpu_check.sh (opt-2.7b: training-step MFU, train_cached
  against train_encode, 3-beam generation tokens/s; opt-6.7b-pt-l: peak memory), random weights, nothing
  downloaded; their targets as rows of their own (target/<shape>/<key>: met / NOT MET, or skipped where a
  target is judged on CUDA only);
- demo/image_vqa: the demo's image VQA, blind and eP-ALM, the frozen LM and ViT held in the run's precision
  (fp16 on CUDA); FAILs unless eP-ALM beats the blind baseline by the size's gain (40 points with the demo's
  900 steps, 15 in the tiny mode's 300);
- engine/<name>: one plain process (as DDP runs each), DeepSpeed ZeRO-2, ZeRO-3 and FSDP on one GPU: train,
  preempted mid-way, resumed, `--evaluate` of the checkpoint, each compared with what it must give
  (benchmarks/smoke_engines.py says what);
- generation/cached: KV-cached generation token for token against recomputation, on the trained demo model
  (skipped when the demo row did not run) and on tiny OPT / Llama / GPT-2 / Qwen2 models, in fp32 (every
  sequence equal) and in half precision (fp16 on CUDA, bf16 on the CPU: at least HALF_SAME of the sequences
  equal; rounding differs between the cached and the recomputed kernels' shapes, which may flip a near tie).

The table is printed and written to OUT/smoke.json and OUT/smoke.md. Exit status 1 when a row FAILs or a target
is NOT MET (`--targets_as_information`: targets are reported, not gated).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks.smoke_engines import ENGINES, engine
from benchmarks.smoke_runs import (
    DEMO_CONFIG, FAIL, MET, NOT_MET, PASS, REPO, Row, build_data, main_run, read_json, run_logged, skipped, tail,
    timed,
)
from epalm.common.errors import LaunchError
from epalm.demo.runner import BLIND, EPALM

HALF_SAME = 0.9  # share of sequences that cached and recomputed half-precision generation must give alike
# The demo row's two variants, the demo's own: the blind baseline (the soft prompt alone) and eP-ALM.
DEMO_VARIANTS = (BLIND, EPALM)


@dataclass
class Sizes:
    """What the GPU run does, and the tiny version that checks the same things on a CPU in a few minutes."""

    shapes: list[str]
    shape_args: list[str]
    demo_data: dict  # build_image_dataset sizes
    demo_steps: int
    min_gain: float  # accuracy points eP-ALM must gain over blind
    engine_data: dict
    engine_steps: int = 6
    extra: list[str] = field(default_factory=list)  # --set overrides for every engine run


def sizes(mode: str) -> Sizes:
    if mode == "tiny":  # the demo's recipe on 1,500 images: eP-ALM gained 26 points in 300 steps (fp32, EPYC)
        return Sizes(shapes=["tiny"], shape_args=["--repeats", "1", "--warmup", "0"],
                     demo_data=dict(n_train=1500, n_val=8, n_test=60, questions_per_image=3), demo_steps=300,
                     min_gain=15.0, engine_data=dict(n_train=48, n_val=8, n_test=12, questions_per_image=2),
                     extra=["--set", "train.batch_size=8", "--set", "eval.batch_size=8"])
    # The demo's own data and 900 steps: +51.6 (AMD EPYC) to +56.5 points (H200, issue 9) so far.
    return Sizes(shapes=["opt-2.7b", "opt-6.7b-pt-l"], shape_args=["--repeats", "5", "--warmup", "2"],
                 demo_data=dict(n_train=6000, n_val=300, n_test=500, questions_per_image=3), demo_steps=900,
                 min_gain=40.0, engine_data=dict(n_train=256, n_val=32, n_test=64, questions_per_image=2))


# --- checks ------------------------------------------------------------------------------------------------
def target_status(met: bool | None, information: bool) -> str:
    if met is None:
        return "skipped: judged on CUDA only"
    return MET if met else f"{NOT_MET} (information)" if information else NOT_MET


def benchmark(shape: str, args: argparse.Namespace, plan: Sizes) -> list[Row]:
    out = args.out / "bench" / f"{shape}.json"
    log = args.out / "logs" / f"bench-{shape}.log"
    dtype = "float16" if args.device == "cuda" else "float32"
    code = run_logged([sys.executable, "-m", "benchmarks.run", "--shape", shape, "--device", args.device,
                       "--dtype", dtype, *plan.shape_args, "--out", str(out)], log)
    if code != 0:
        return [Row(f"bench/{shape}", FAIL, f"exit {code}: {tail(log)}")]
    result = read_json(out)
    modes = result["modes"]
    facts = [f"{mode} {key} {modes[mode][key]:.3g}" for mode, key in (
        ("train_encode", "mfu"), ("train_encode", "peak_memory_mb"), ("train_encode", "samples_per_s"),
        ("train_cached", "samples_per_s"), ("generate", "tokens_per_s")) if modes.get(mode, {}).get(key) is not None]
    if "generate" in modes:
        facts[-1] += f" ({result['shape'].get('num_beams', '?')} beams)"
    rows = [Row(f"bench/{shape}", PASS, ", ".join(facts) or "measured")]
    for target in result.get("targets", []):
        rows.append(Row(f"target/{shape}/{target['key']}", target_status(target["met"], args.targets_as_information),
                        f"value {target['value']}, bound {target['bound']}"))
    return rows


def demo_vqa(args: argparse.Namespace, plan: Sizes) -> list[Row]:
    """Blind and eP-ALM on the demo's image VQA, the frozen LM and ViT in the run's precision (`auto` dtypes)."""
    data = build_data(args.out / "data" / "demo", plan.demo_data)
    scores = {}
    for variant, overrides in DEMO_VARIANTS:
        run = args.out / "demo" / variant
        extra = [item for override in overrides for item in ("--set", override)]
        code, log = main_run(args.out, f"demo-{variant}", [
            "--config", str(DEMO_CONFIG), "--data_dir", str(data), "--output_dir", str(run),
            "--set", f"train.max_steps={plan.demo_steps}", "--set", f"mixed_precision='{args.precision}'",
            "--set", "model.lm.dtype=auto", "--set", "model.encoders.image.dtype=auto",
            "--set", f"train.feature_cache_dir={args.out / 'feature_cache'}", *extra])
        if code != 0:
            return [Row("demo/image_vqa", FAIL, f"{variant}: exit {code}: {tail(log)}")]
        metrics = read_json(run / "eval" / "karpathy_test_metrics.json")
        scores[variant] = metrics["main"]["value"] or 0.0
    gain = scores["epalm"] - scores["blind"]
    frozen = {"fp16": "fp16", "bf16": "bf16"}.get(args.precision, "fp32")
    return [Row("demo/image_vqa", PASS if gain >= plan.min_gain else FAIL,
                f"{plan.demo_steps} steps, frozen LM and ViT {frozen}: blind {scores['blind']:.1f}, eP-ALM "
                f"{scores['epalm']:.1f}, gain {gain:+.1f} (needs >= +{plan.min_gain:g}) on {metrics['num_samples']} "
                "questions")]


def _agreement(generate, inputs: list, half) -> tuple[bool, str]:
    """fp32: every sequence equal; half precision: at least HALF_SAME of them (see the module's docstring)."""
    import torch

    details, ok = [], True
    for dtype in (torch.float32, half):
        same = total = 0
        for batch in inputs:
            cached, recomputed = generate(batch, dtype, True), generate(batch, dtype, False)
            same += int((cached == recomputed).all(dim=-1).sum())
            total += cached.shape[0]
        enough = same == total if dtype == torch.float32 else same >= HALF_SAME * total
        ok &= enough
        details.append(f"{str(dtype).removeprefix('torch.')} {same}/{total}")
    return ok, ", ".join(details)


def cached_generation(args: argparse.Namespace) -> list[Row]:
    """Cached and recomputed generation token for token: the trained demo model, then tiny models."""
    import torch

    from benchmarks.workloads import generation, synthetic_inputs
    from epalm.models.checkpoint import load_checkpoint
    from tests.tiny_models import TINY_LMS, images, text_batch, tiny_model

    device = torch.device(args.device)
    half = torch.float16 if args.device == "cuda" else torch.bfloat16
    rows = []
    trained = args.out / "demo" / "epalm" / "checkpoints" / "last" / "trainable"
    if not trained.is_dir():
        rows.append(skipped(f"generation/cached demo model ({args.device})", "demo/image_vqa did not run"))
    else:
        model, _ = load_checkpoint(trained, load_tokenizer_if_missing=False)
        model.to(device)
        inputs = [synthetic_inputs(model, 16, 8, device)]

        def demo_generate(batch, dtype, cache):
            model.lm.to(dtype)
            model.encoder_for().to(dtype)
            return torch.cat([generation(model, batch, new_tokens=12, num_beams=beams, use_cache=cache)()
                              for beams in (1, 3)])
        ok, detail = _agreement(demo_generate, inputs, half)
        rows.append(Row(f"generation/cached demo model ({args.device})", PASS if ok else FAIL,
                        f"sequences equal, greedy and 3 beams: {detail}"))
    models = {kind: tiny_model(kind).to(device) for kind in ("opt", "llama", "gpt2", "qwen2") if kind in TINY_LMS}

    def tiny_generate(kind, dtype, cache):
        model = models[kind]
        model.lm.to(dtype)
        model.encoder_for().to(dtype)
        ids, mask = text_batch(batch=3, length=5, left_pad=True)
        return model.generate(ids.to(device), mask.to(device), media=images(3).to(device, dtype), max_new_tokens=8,
                              min_new_tokens=8, num_beams=3, use_cache=cache)
    ok, detail = _agreement(tiny_generate, list(models), half)
    rows.append(Row(f"generation/cached tiny LMs ({args.device})", PASS if ok and len(models) == 4 else FAIL,
                    f"{', '.join(models)}, 3 beams: {detail}"))
    return rows


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


def failed(rows: list[Row]) -> list[Row]:
    """The rows that make the exit status 1: a FAIL, a target NOT MET (unless reported as information)."""
    return [row for row in rows if row.status in (FAIL, NOT_MET)]


EXAMPLES = """examples:
  bash run_scripts/gpu_smoke.sh
  DEVICE=cpu SMOKE=tiny bash run_scripts/gpu_smoke.sh --only engines --precision bf16
  python -m benchmarks.gpu_smoke --device cpu --sizes tiny --only bench demo generation"""
SMOKE_FAILED_STATUS = 1  # a row FAILed or a target was NOT MET (the table says which)


def argument_parser() -> argparse.ArgumentParser:
    from epalm.common.command_line import add_debug_flag, command_parser

    parser = command_parser("python -m benchmarks.gpu_smoke", __doc__, EXAMPLES)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cuda (default) or cpu")
    parser.add_argument("--sizes", default="full", choices=("full", "tiny"),
                        help="full: the GPU shapes (default); tiny: the same checks, CPU sizes")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_smoke", metavar="DIR",
                        help="where runs, smoke.json and smoke.md go (default outputs/gpu_smoke)")
    parser.add_argument("--only", nargs="+", default=["bench", "demo", "engines", "generation"],
                        choices=("bench", "demo", "engines", "generation"), help="only these groups of rows")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES),
                        help="only these engines (default: all)")
    parser.add_argument("--precision", choices=("fp16", "bf16", "no"), default=None,
                        help="mixed precision of the demo and engine runs (default: fp16 on CUDA, else no)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="engine runs side by side (default: 8 on CUDA, 1 on the CPU)")
    parser.add_argument("--targets_as_information", action="store_true",
                        help="report the benchmark targets, do not fail on NOT MET")
    add_debug_flag(parser)
    return parser


def write_summary(args: argparse.Namespace, rows: list[Row], seconds: float, final: bool) -> dict:
    """smoke.json and smoke.md, after each group too: a call cut short still leaves the rows it finished."""
    from epalm.common.atomic_io import write_text_atomic

    summary = {"machine": machine(args.device), "sizes": args.sizes, "seconds": round(seconds, 1), "complete": final,
               "failed": [row.check for row in failed(rows)], "rows": [asdict(r) for r in rows]}
    table = format_table(rows)
    write_text_atomic(args.out / "smoke.json", json.dumps(summary, indent=2))
    write_text_atomic(args.out / "smoke.md", f"{json.dumps(summary['machine'])}\n\n{table}\n")
    return summary


def main(argv: list[str] | None = None) -> list[Row]:
    args = argument_parser().parse_args(argv)
    args.precision = args.precision or ("fp16" if args.device == "cuda" else "no")
    jobs = args.jobs or (8 if args.device == "cuda" else 1)
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
        write_summary(args, rows, time.time() - start, final=False)
    # The demo task runs beside the engines (small models: they share the GPU). On the CPU the engines run one
    # after the other (two DeepSpeed processes at once hang on a CPU machine, whose DeepSpeed talks through
    # shared memory); on CUDA `jobs` of their runs at once (each engine's two first runs side by side).
    groups: list[Callable[[], list[Row]]] = []
    if "demo" in args.only:
        groups.append(lambda: timed("demo/image_vqa", lambda: demo_vqa(args, plan)))
    if "engines" in args.only:
        def engines() -> list[Row]:
            data = build_data(args.out / "data" / "engines", plan.engine_data)
            with ThreadPoolExecutor(max_workers=max(1, jobs // 2)) as pool:
                results = pool.map(lambda name: timed(f"engine/{name}", lambda: engine(name, args, plan, data, jobs)),
                                   args.engines)
                return [row for result in results for row in result]
        groups.append(engines)
    with ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
        for result in pool.map(lambda group: group(), groups):
            rows += result
    if groups:
        write_summary(args, rows, time.time() - start, final=False)
    if "generation" in args.only:
        rows += timed("generation/cached", lambda: cached_generation(args))
    print(format_table(rows))
    summary = write_summary(args, rows, time.time() - start, final=True)
    verdict = f"{len(summary['failed'])} failed: {', '.join(summary['failed'])}" if summary["failed"] else "all passed"
    print(f"\n{len(rows)} rows in {summary['seconds']} s, {verdict}; written {args.out / 'smoke.md'}")
    return rows


def main_with_status(argv: list[str]) -> None:
    if failed(main(argv)):
        raise SystemExit(SMOKE_FAILED_STATUS)


if __name__ == "__main__":
    from epalm.common.command_line import run_command

    sys.exit(run_command(main_with_status))
