"""Speed ideas measured against the current code, each variant beside its baseline in the same process.

Ideas (docs/benchmarks.md discusses the results):
  inference_mode  generation under torch.inference_mode instead of the no_grad of EPALM.generate
  attention       the LM with eager attention instead of sdpa (training step and generation)
  backward_stop   no soft prompt: does autograd stop below the first injection layer? (checked, and timed)
  threads         torch.set_num_threads(1) vs 2
  adamw           AdamW step: default vs foreach vs fused
  cpu_bf16        LM weights in bfloat16 and bf16 autocast on the CPU (mixed_precision: bf16) vs fp32;
                  generation also under autocast (the encoder in bf16 too)
  workers         data-loader workers (0 vs 2) for on-the-fly decoding + augmentation
  frozen_autocast training steps with the frozen LM and encoder run natively in --dtype vs under autocast
  fused_adamw     training steps with AdamW's default implementation vs the fused kernel
  compile_lm      model.lm.compile (torch.compile of the frozen LM, hooks included) vs eager: training steps
                  and KV-cached beam search; only when named (compilation takes minutes)
The last three hold the frozen weights in --dtype under autocast, as mixed-precision training does.
Nothing here changes the project's code: each variant is set up from outside (config fields, thread
count, optimizer options, context managers; frozen_autocast's earlier behaviour by replacing one function
for the duration of its step).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from benchmarks import pipeline, workloads
from benchmarks.measure import time_mode
from benchmarks.report import write_json
from benchmarks.shapes import SHAPES, BenchShape, get_shape
from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.models.factory import build_model
from epalm.training.provenance import git_commit, package_versions

EXAMPLES = """examples:
  python -m benchmarks.ideas --shape ref-small                       # every idea
  python -m benchmarks.ideas --shape demo-image --ideas attention threads --repeats 5
  # docs/benchmarks.md discusses what was measured"""
RESULTS = Path(__file__).resolve().parent / "results"
Variant = tuple[str, str, Callable[[], Any]]  # (measure, variant, fn); the first variant of a measure is its baseline


def _model(shape: BenchShape, device: torch.device, dtype: str = "float32", **fields):
    cfg = copy.deepcopy(shape.model)
    cfg.lm.dtype = dtype
    for key, value in fields.items():
        if key == "attn_implementation":
            cfg.lm.attn_implementation = value
        else:
            setattr(cfg, key, value)
    torch.manual_seed(0)
    model, _ = build_model(cfg, load_tokenizer_if_missing=False)
    model = model.to(device)
    return model, workloads.synthetic_inputs(model, shape.batch_size, shape.text_len, device)


def _train(model, inputs, cached: bool, autocast=None) -> Callable[[], Any]:
    optimizer = workloads.make_optimizer(model)
    return workloads.training_step(model, optimizer, inputs, cached, autocast or contextlib.nullcontext)


def _generate(model, inputs, shape: BenchShape, context=None) -> Callable[[], Any]:
    kwargs = {"context": context} if context else {}
    return workloads.generation(model, inputs, shape.new_tokens, shape.num_beams, True, **kwargs)


def inference_mode(shape, device, args) -> list[Variant]:
    model, inputs = _model(shape, device)
    return [("generate", "no_grad", _generate(model, inputs, shape)),
            ("generate", "inference_mode", _generate(model, inputs, shape, torch.inference_mode))]


def attention(shape, device, args) -> list[Variant]:
    variants = []
    for attn in ("sdpa", "eager"):
        model, inputs = _model(shape, device, attn_implementation=attn)
        variants += [("train_encode", attn, _train(model, inputs, False)),
                     ("generate", attn, _generate(model, inputs, shape))]
    return sorted(variants, key=lambda v: v[0] == "generate")


def first_layer_in_backward(model, inputs) -> int | None:
    """Index of the first LM layer whose output is part of the autograd graph in a training forward."""
    flags: list[bool] = []
    handles = [layer.register_forward_hook(
        lambda m, a, out: flags.append((out[0] if isinstance(out, tuple) else out).requires_grad))
        for layer in model.lm.layers]
    try:
        model.train()
        model(inputs.input_ids, inputs.attention_mask, features=inputs.features)
    finally:
        for handle in handles:
            handle.remove()
    return next((i for i, flag in enumerate(flags) if flag), None)


def backward_stop(shape, device, args) -> list[Variant]:
    variants = []
    for name, prompt in (("with_prompt", True), ("no_prompt", False)):
        model, inputs = _model(shape, device, prompt_tuning=prompt)
        first = first_layer_in_backward(model, inputs)
        args.facts[f"backward_stop/{name}/first_layer_in_graph"] = first
        args.facts[f"backward_stop/{name}/first_injection_layer"] = model.plan.first_layer
        variants.append(("train_cached", name, _train(model, inputs, True)))
    return variants


def threads(shape, device, args) -> list[Variant]:
    model, inputs = _model(shape, device)
    step, gen = _train(model, inputs, False), _generate(model, inputs, shape)

    def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run():
            before = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                return fn()
            finally:
                torch.set_num_threads(before)
        return run

    pairs = (("train_encode", step), ("generate", gen))
    return [(measure, f"{n}_threads", with_threads(n, fn)) for measure, fn in pairs for n in (2, 1)]


def adamw(shape, device, args) -> list[Variant]:
    model, _ = _model(shape, device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    variants = []
    for name, options in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        optimizer = workloads.make_optimizer(model, fused_adamw=False, **options)
        variants.append(("adamw_step", name, optimizer.step))
    return variants


def cpu_bf16(shape, device, args) -> list[Variant]:
    """Training as the trainer runs bf16 (LM weights bf16, autocast); generation as the evaluator runs it
    (LM weights bf16, no autocast: the encoder and connector stay fp32) and under autocast too."""
    variants = []
    for dtype in ("float32", "bfloat16"):
        model, inputs = _model(shape, device, dtype=dtype)
        autocast = workloads.autocast_for(device, getattr(torch, dtype))
        variants += [("train_encode", dtype, _train(model, inputs, False, autocast)),
                     ("generate", dtype, _generate(model, inputs, shape))]
        if dtype == "bfloat16":
            variants.append(("generate", "bfloat16+autocast", _generate(model, inputs, shape, autocast)))
    return sorted(variants, key=lambda v: v[0] == "generate")


def workers(shape, device, args) -> list[Variant]:
    model, inputs = _model(shape, device)
    samples = shape.batch_size * (args.warmup + args.repeats)
    split = pipeline.synthetic_split(args.data_dir, args.workdir, samples)
    optimizer = workloads.make_optimizer(model)
    return [("train_encode_pipeline", f"{n}_workers",
             pipeline.pipeline_step(model, optimizer, split, inputs, None, device, n)) for n in (0, 2)]


def _recipe(shape: BenchShape, device: torch.device, args, **lm_fields):
    """The model as mixed-precision training holds it (frozen LM and encoder in `--dtype`, connector and prompt
    fp32), its inputs, and the autocast the trainer runs its steps under."""
    cfg = copy.deepcopy(shape.model)
    cfg.lm.dtype = args.dtype
    for encoder in cfg.encoders.values():
        encoder.dtype = args.dtype
    for key, value in lm_fields.items():
        setattr(cfg.lm, key, value)
    torch.manual_seed(0)
    model, _ = build_model(cfg, load_tokenizer_if_missing=False)
    model = model.to(device)
    inputs = workloads.synthetic_inputs(model, shape.batch_size, shape.text_len, device)
    return model, inputs, workloads.autocast_for(device, getattr(torch, args.dtype))


def _patched(target: Any, name: str, value: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` run with `target.name` replaced by `value` (the earlier behaviour, as a variant)."""
    def run():
        saved = getattr(target, name)
        setattr(target, name, value)
        try:
            return fn()
        finally:
            setattr(target, name, saved)
    return run


def frozen_autocast(shape, device, args) -> list[Variant]:
    """The frozen LM and encoder held in --dtype run natively (models/precision.py) vs under autocast as before
    (on a GPU autocast casts around every LayerNorm); training steps with and without the encoder."""
    import epalm.models.epalm

    model, inputs, autocast = _recipe(shape, device, args)
    variants = []
    for measure, cached in (("train_encode", False), ("train_cached", True)):
        step = _train(model, inputs, cached, autocast)
        variants += [(measure, "native", step),
                     (measure, "under_autocast", _patched(epalm.models.epalm, "native_precision",
                                                          lambda module: contextlib.nullcontext(), step))]
    return variants


def fused_adamw(shape, device, args) -> list[Variant]:
    """Whole training steps with AdamW's default implementation (foreach on a GPU) vs the fused kernel
    (`train.fused_adamw`; its `auto` picks fused on a GPU)."""
    model, inputs, autocast = _recipe(shape, device, args)
    variants = []
    for measure, cached in (("train_encode", False), ("train_cached", True)):
        for name, fused in (("default", False), ("fused", True)):
            optimizer = workloads.make_optimizer(model, fused_adamw=fused)
            variants.append((measure, name, workloads.training_step(model, optimizer, inputs, cached, autocast)))
    return variants


def compile_lm(shape, device, args) -> list[Variant]:
    """`model.lm.compile: true` (torch.compile of the frozen LM with the injection hooks) vs eager: training
    steps with and without the encoder, and KV-cached beam search (--warmup >= 1 pays the compilation)."""
    variants = []
    for name, compiled in (("eager", False), ("compiled", args.compile_backend)):
        model, inputs, autocast = _recipe(shape, device, args, compile=compiled)
        variants += [("train_encode", name, _train(model, inputs, False, autocast)),
                     ("train_cached", name, _train(model, inputs, True, autocast)),
                     ("generate", name, _generate(model, inputs, shape))]
    return sorted(variants, key=lambda v: ("train_encode", "train_cached", "generate").index(v[0]))


IDEAS: dict[str, Callable[..., list[Variant]]] = {
    "inference_mode": inference_mode, "attention": attention, "backward_stop": backward_stop, "threads": threads,
    "adamw": adamw, "cpu_bf16": cpu_bf16, "workers": workers, "frozen_autocast": frozen_autocast,
    "fused_adamw": fused_adamw, "compile_lm": compile_lm,
}
# Not run unless named: compilation takes minutes.
DEFAULT_IDEAS = [name for name in IDEAS if name != "compile_lm"]


def format_rows(rows: list[dict[str, Any]]) -> str:
    table = [["idea", "measure", "variant", "median s", "cpu s", "vs baseline"]]
    for row in rows:
        table.append([row["idea"], row["measure"], row["variant"], f"{row['median_s']:.4g}", f"{row['median_cpu_s']:.4g}",
                      "baseline" if row["baseline"] else f"{row['speedup']:.2f}x"])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m benchmarks.ideas", __doc__, EXAMPLES)
    parser.add_argument("--shape", default="ref-small", choices=sorted(SHAPES), metavar="SHAPE",
                        help=f"{', '.join(sorted(SHAPES))} (default ref-small)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"),
                        help="default: cuda when a GPU is visible")
    parser.add_argument("--ideas", nargs="+", default=DEFAULT_IDEAS, choices=list(IDEAS), metavar="IDEA",
                        help="only these ideas (listed above; default: all but compile_lm)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="frozen weights and autocast of the precision ideas (auto: fp16 on a GPU)")
    parser.add_argument("--compile-backend", dest="compile_backend", default="inductor", metavar="NAME",
                        help="torch.compile backend of compile_lm (default inductor)")
    parser.add_argument("--repeats", type=int, default=3, metavar="N", help="timed runs per variant (default 3)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs first (default 1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch.set_num_threads for all but `threads`")
    parser.add_argument("--data_dir", type=Path, default=None, metavar="DIR",
                        help="synthetic image VQA data for `workers`")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="the JSON written (default: in benchmarks/results/)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = argument_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dtype == "auto":
        args.dtype = "float16" if device.type == "cuda" else "float32"
    shape = get_shape(args.shape)
    args.facts = {}
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="epalm-ideas-") as tmp:
        args.workdir = Path(tmp)
        for idea in args.ideas:
            if idea in ("threads", "cpu_bf16") and device.type != "cpu":
                continue
            baselines: dict[str, float] = {}  # the first variant of each measure is its baseline
            for measure, variant, fn in tqdm(IDEAS[idea](shape, device, args), desc=idea):
                timing = time_mode(fn, device, args.repeats, args.warmup)
                median, cpu = timing.median_s, statistics.median(timing.cpu_times_s)
                is_baseline = measure not in baselines
                baseline = baselines.setdefault(measure, median)
                rows.append({"idea": idea, "measure": measure, "variant": variant, "median_s": median,
                             "median_cpu_s": cpu, "baseline": is_baseline, "speedup": baseline / median})
    result = {"shape": shape.name, "device": device.type, "dtype": args.dtype, "threads": torch.get_num_threads(),
              "repeats": args.repeats, "load_before": load_before, "load_after": os.getloadavg(), "rows": rows, "facts": args.facts,
              "versions": package_versions(), "git_commit": git_commit(),
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    out = args.out or RESULTS / f"ideas-{shape.name}-{device.type}.json"
    write_json(out, result)
    print(f"{shape.name} on {device.type}, load {load_before[0]:.2f} -> {result['load_after'][0]:.2f}, "
          f"median of {args.repeats}")
    print(format_rows(rows))
    for key, value in args.facts.items():
        print(f"{key}: {value}")
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    sys.exit(run_command(main))
