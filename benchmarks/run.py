"""Speed of training and generation for one model shape, its modes side by side in the same run.

Modes (medians of `--repeats` after `--warmup` untimed runs; see docs/benchmarks.md):
  encode                 the frozen encoder alone on a batch of images
  train_encode           training step (forward, backward, AdamW), encoder run on the images, the trainer's
                         default answer-only loss (the last 5 tokens; the LM head runs at those positions only)
  train_cached           training step from precomputed (K, d_enc) encoder features
  train_encode_all_tokens  train_encode with the loss on every token (the reference's loss)
  train_*_pipeline       the same two fed by the real data pipeline (decode + augment vs the feature cache)
  generate               beam search of `new_tokens` (the reference's 20) with the KV cache
  generate_kv_cache      beam search of `compare_tokens` (30) with the KV cache ...
  generate_recompute     ... and recomputing the whole sequence at every step (use_cache=False)
  train_epalm, generate_epalm   the same in `epalm` injection mode (whose generation must recompute)
It prints a table and the ratios between modes (with the targets of the shape) and writes JSON.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from benchmarks import pipeline, workloads
from benchmarks.flops import device_peak, matmul_weights, training_step_flops, utilisation
from benchmarks.measure import time_mode, time_modes_interleaved
from benchmarks.profiling import format_profile, top_operators
from benchmarks.report import format_table, ratios, reference_gaps, target_results, write_json
from benchmarks.shapes import SHAPES, BenchShape, get_shape
from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.common.config_io import to_dict
from epalm.models.factory import build_model
from epalm.models.param_count import count_parameters
from epalm.training.provenance import git_commit, package_versions

EXAMPLES = """examples:
  python -m benchmarks.run --shape ref-small                 # the reference's small shape, every mode
  python -m benchmarks.run --shape tiny --repeats 1 --modes train_encode generate
  python -m benchmarks.run --shape opt-2.7b --device cuda --dtype float16   # or: bash benchmarks/gpu_check.sh
  # docs/benchmarks.md: the shapes, the modes, the results measured so far"""
RESULTS = Path(__file__).resolve().parent / "results"
CAUSAL_MODES = ("encode", "train_encode", "train_cached", "train_encode_all_tokens", "train_encode_pipeline",
                "train_cached_pipeline", "generate", "generate_kv_cache", "generate_recompute")
EPALM_MODES = ("train_epalm", "generate_epalm")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Measure:
    name: str
    fn: Callable[[], Any]
    samples: int  # samples per repetition
    tokens: int  # text tokens per repetition (training: the batch's tokens; generation: new tokens returned)
    flops: float | None = None  # model FLOPs per repetition (training steps)


def build(shape: BenchShape, mode: str, dtype: torch.dtype, device: torch.device):
    cfg = copy.deepcopy(shape.model)
    cfg.injection_mode = mode
    cfg.lm.dtype = {v: k for k, v in DTYPES.items()}[dtype]  # as training resolves "auto"
    for encoder in cfg.encoders.values():
        encoder.dtype = cfg.lm.dtype
    torch.manual_seed(0)  # both modes get the same weights
    with device:  # random init where the model runs: seconds for billions of weights on a GPU
        model, _ = build_model(cfg, load_tokenizer_if_missing=False)
    return model.to(device)


def causal_measures(model, shape: BenchShape, args, device, dtype, workdir: Path, notes: dict) -> list[Measure]:
    b, t = shape.batch_size, shape.text_len
    inputs = workloads.synthetic_inputs(model, b, t, device)
    autocast = workloads.autocast_for(device, dtype)
    optimizer = workloads.make_optimizer(model)
    flops = training_step_flops(model, b, t, head_positions=workloads.ANSWER_TOKENS)  # the LM head's positions
    all_tokens = training_step_flops(model, b, t)
    measures = [
        Measure("encode", workloads.encoding(model, inputs, autocast), b, 0, flops.encoder),
        Measure("train_encode", workloads.training_step(model, optimizer, inputs, False, autocast), b, b * t,
                flops.total(cached=False)),
        Measure("train_cached", workloads.training_step(model, optimizer, inputs, True, autocast), b, b * t,
                flops.total(cached=True)),
        Measure("train_encode_all_tokens",
                workloads.training_step(model, optimizer, inputs, False, autocast, loss_tokens="all"), b, b * t,
                all_tokens.total(cached=False)),
    ]
    if shape.pipeline and args.pipeline:
        split = pipeline.synthetic_split(args.data_dir, workdir, b * (args.warmup + args.repeats))
        start = time.perf_counter()
        cache = pipeline.build_feature_cache(model, split, workdir / "features", device)
        notes["feature_cache_build_s"] = time.perf_counter() - start
        notes["pipeline_samples"] = len(split)
        for name, cached in (("train_encode_pipeline", None), ("train_cached_pipeline", cache)):
            step = pipeline.pipeline_step(model, optimizer, split, inputs, cached, device, args.workers, autocast)
            measures.append(Measure(name, step, b, b * t, flops.total(cached=cached is not None)))
    for name, tokens, cache in (("generate", shape.new_tokens, True), ("generate_kv_cache", shape.compare_tokens, True),
                                ("generate_recompute", shape.compare_tokens, False)):
        gen = workloads.generation(model, inputs, tokens, shape.num_beams, cache)
        measures.append(Measure(name, gen, b, b * tokens))
    return measures


def epalm_measures(model, shape: BenchShape, args, device, dtype) -> list[Measure]:
    b, t = shape.batch_size, shape.text_len
    inputs = workloads.synthetic_inputs(model, b, t, device)
    optimizer = workloads.make_optimizer(model)
    flops = training_step_flops(model, b, t, head_positions=workloads.ANSWER_TOKENS)
    step = workloads.training_step(model, optimizer, inputs, False, workloads.autocast_for(device, dtype))
    gen = workloads.generation(model, inputs, shape.compare_tokens, shape.num_beams, use_cache=False)
    return [Measure("train_epalm", step, b, b * t, flops.total(cached=False)),
            Measure("generate_epalm", gen, b, b * shape.compare_tokens)]


def summarise(measure: Measure, timing, peak: float | None) -> dict[str, Any]:
    median = timing.median_s
    row: dict[str, Any] = {
        "median_s": median, "times_s": timing.times_s, "cpu_times_s": timing.cpu_times_s,
        "median_cpu_s": statistics.median(timing.cpu_times_s), "samples_per_s": measure.samples / median,
        "tokens_per_s": measure.tokens / median if measure.tokens else None,
        "peak_memory_mb": timing.peak_memory_mb, "start_memory_mb": timing.start_memory_mb,
        "peak_memory_scope": timing.peak_memory_scope,
    }
    if measure.flops:
        row.update(flops=measure.flops, **utilisation(measure.flops, median, peak))
    return row


def model_facts(model) -> dict[str, Any]:
    parts = {"lm": model.lm, "encoder": model.encoder_for() if model.encoders else None,
             "connector": model.connector_for() if model.connectors else None, "prompt_module": model.prompt_module}
    parts = {name: count_parameters(module) for name, module in parts.items() if module is not None}
    return {
        "parameters": {name: {"trainable": c.trainable, "total": c.total} for name, c in parts.items()},
        "matmul_weights": {"lm": matmul_weights(model.lm), "encoder": matmul_weights(model.encoder_for())},
        "lm_layers": model.lm.num_layers, "injection_layers": model.plan.layer_tokens if model.plan else None,
        "prefix_len": model.prefix_len,
    }


def machine_facts(device: torch.device, dtype: torch.dtype, peak: float | None) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{os.cpu_count()}"
    return {"device": device.type, "device_name": name, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "peak_tflops": peak,
            "load_before": os.getloadavg()}


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m benchmarks.run", __doc__, EXAMPLES)
    parser.add_argument("--shape", default="ref-small", choices=sorted(SHAPES), metavar="SHAPE",
                        help=f"{', '.join(sorted(SHAPES))} (default ref-small)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"),
                        help="default: cuda when a GPU is visible")
    parser.add_argument("--dtype", default="auto", choices=("auto", *DTYPES),
                        help="LM weights, autocast (auto: bf16 GPU, fp32 CPU)")
    parser.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs per mode (default 5)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs first (default 1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--modes", nargs="+", default=None, choices=CAUSAL_MODES + EPALM_MODES, metavar="MODE",
                        help="only these modes (listed above; default: the shape's)")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                        help="skip the data-pipeline modes")
    parser.add_argument("--data_dir", type=Path, default=None, metavar="DIR",
                        help="synthetic image VQA data for the pipeline modes")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="data-loader workers of the pipeline modes")
    parser.add_argument("--peak-tflops", dest="peak_tflops", type=float, default=None, metavar="T",
                        help="GPU dense bf16/fp16 peak when flops.py lacks it")
    parser.add_argument("--interleave", action="store_true",
                        help="time the modes round-robin, so a drift of the machine reaches all alike")
    parser.add_argument("--profile", action="store_true", help="also list each mode's top operators")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="the JSON written (default: in benchmarks/results/)")
    add_debug_flag(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # called in-process (tests), leave the caller's setting


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = get_shape(args.shape)
    peak = device_peak(device, args.peak_tflops)
    wanted = set(args.modes or shape.modes or CAUSAL_MODES + EPALM_MODES)
    machine = machine_facts(device, dtype, peak)
    modes: dict[str, dict[str, Any]] = {}
    notes: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="epalm-bench-") as tmp:
        for injection_mode, names in (("causal", CAUSAL_MODES), ("epalm", EPALM_MODES)):
            if not wanted & set(names):
                continue
            model = build(shape, injection_mode, dtype, device)
            facts = facts or model_facts(model)
            if injection_mode == "causal":
                measures = causal_measures(model, shape, args, device, dtype, Path(tmp), notes)
            else:
                measures = epalm_measures(model, shape, args, device, dtype)
            chosen = [m for m in measures if m.name in wanted]
            if args.interleave:
                timings = time_modes_interleaved({m.name: m.fn for m in chosen}, device, args.repeats, args.warmup)
            for measure in tqdm(chosen, desc=f"{shape.name} {injection_mode}"):
                if args.interleave:
                    timing = timings[measure.name]
                else:
                    timing = time_mode(measure.fn, device, args.repeats, args.warmup)
                modes[measure.name] = summarise(measure, timing, peak)
                if args.profile:
                    modes[measure.name]["profile"] = top_operators(measure.fn, device)
            del model, measures
            gc.collect()
    machine["load_after"] = os.getloadavg()
    dtype_name = machine["dtype"]
    values = ratios(modes, shape, dtype_name)
    result = {
        "shape": {"name": shape.name, "description": shape.description, "batch_size": shape.batch_size,
                  "text_len": shape.text_len, "new_tokens": shape.new_tokens, "compare_tokens": shape.compare_tokens,
                  "num_beams": shape.num_beams, "model": to_dict(shape.model), "reference": shape.reference},
        "model": facts, "machine": machine, "repeats": args.repeats, "warmup": args.warmup,
        "interleaved": args.interleave,
        "workers": args.workers, "modes": modes, "ratios": values,
        "reference_gaps": reference_gaps(modes, shape, dtype_name),
        "targets": target_results(values, modes, shape, device.type),
        "notes": notes, "versions": package_versions(), "git_commit": git_commit(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out = args.out or RESULTS / f"{shape.name}-{device.type}.json"
    write_json(out, result)
    for name, mode in modes.items():
        if "profile" in mode:
            print(format_profile(name, mode["profile"]))
    print(format_table(result))
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    sys.exit(run_command(main))
