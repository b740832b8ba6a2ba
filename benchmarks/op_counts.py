"""Operator counts of one training step or generation: how many aten operators run, and how many of them
cast or copy tensors, with where each cast comes from. Counts do not depend on the machine's load, so they
are comparable on a shared machine (times are not) and can be asserted in tests.

    python -m benchmarks.op_counts --shape ref-small [--dtypes float32 bfloat16 float16] \
        [--modes train_encode train_cached generate] [--device cpu|cuda] [--narrow] [--cuda-norms] \
        [--against REV] [--by-site] [--out FILE]

Every operator that reaches the dispatcher below autograd and autocast is counted (TorchDispatchMode), in
the forward, the backward and the optimizer step. Training runs as the trainer runs it (frozen weights
held in the dtype, autocast to it; fp32: no autocast), generation as the evaluator does (no autocast).
A *cast* is a `_to_copy` or `copy_` whose result has another dtype than its source (autocast's casts are
`_to_copy` calls too); a *copy* is one that keeps the dtype (`.contiguous()`, a device move, `copy_` into a
buffer). Forward casts are attributed to a *site*: the innermost frame of this project's code on the Python
stack (models/, training/, dataset/, benchmarks/), the innermost library frame below it if any, and the
module that was running with layer indices folded (`layers.*`), so a cast made once per LM layer shows as
one site with a count of L.

The CPU's autocast (bf16 and fp16) only lowers matmuls and attention; CUDA's also runs LayerNorm, softmax
and a few others in fp32, which casts around every norm of a half-precision model that runs under it.
`--device cuda` counts those on a GPU; `--cuda-norms` counts them on the CPU by giving its autocast CUDA's
rule for norms (`CudaNormPolicy`; training modes only, generation runs without autocast).

`--against REV` counts the same workloads with the models, data, training and benchmark code of git
revision REV (its files extracted to a temporary folder, counted there by this script in a subprocess) and
prints both side by side.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks import op_counter
from benchmarks.op_counter import REPO, OpCount, count_ops

RESULTS = REPO / "benchmarks" / "results"
MODES = ("train_encode", "train_cached", "generate")
DTYPES = ("float32", "bfloat16", "float16")
# What a revision needs to be measured (`--against`): the library's folders (extracted under epalm/, as installed),
# the benchmarks and the shapes' configs. Revisions before the `epalm` package (2026-12-04) cannot be measured by
# this script: their counts are in benchmarks/results/op-counts-*.json.
LIBRARY_DIRS = ("common", "models", "dataset", "training", "inference", "demo", "studies")


def _model(shape, dtype: str, device: torch.device):
    from epalm.models.factory import build_model

    cfg = copy.deepcopy(shape.model)
    cfg.lm.dtype = dtype  # as training resolves "auto" under that mixed precision
    for encoder in cfg.encoders.values():
        encoder.dtype = dtype
    torch.manual_seed(0)
    with device:  # random init where the model runs (seconds for billions of weights on a GPU)
        model, _ = build_model(cfg, load_tokenizer_if_missing=False)
    return model.to(device)


def _autocast(dtype: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype == "float32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=getattr(torch, dtype))


def measure(shape_name: str, dtype: str, mode: str, layers: int | None = None, device: str = "cpu",
            narrow: bool = False, cuda_norms: bool = False) -> OpCount:
    """One step of `mode` (after a warm-up step: the optimizer creates its states there), as the trainer and
    the evaluator run it: training under autocast to `dtype` (none in fp32), generation without."""
    from benchmarks import workloads
    from benchmarks.shapes import get_shape
    from epalm.training.loss import training_loss

    shape = get_shape(shape_name)
    if layers is not None:
        shape = _with_lm_layers(shape, layers)
    if narrow:
        shape = _narrowed(shape)
    device = torch.device(device)
    model = _model(shape, dtype, device)
    inputs = workloads.synthetic_inputs(model, shape.batch_size, shape.text_len, device)
    autocast = _autocast(dtype, device)
    if mode == "generate":  # as the evaluator generates: weights in their dtype, no autocast
        generate = workloads.generation(model, inputs, shape.new_tokens, shape.num_beams, True)
        return count_ops(model, generate)
    if mode not in ("train_encode", "train_cached"):
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    cached = mode == "train_cached"
    optimizer = workloads.make_optimizer(model)
    step = workloads.training_step(model, optimizer, inputs, cached, autocast)
    step()  # warm-up: AdamW builds its states in the first step
    labels = workloads.training_labels(inputs.input_ids, "answer")

    def forward():
        with autocast():
            return training_loss(model, inputs.input_ids, inputs.attention_mask, labels,
                                 media=None if cached else inputs.media, features=inputs.features if cached else None)

    def optimizer_step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return count_ops(model, forward, lambda loss: loss.backward(), optimizer_step, cuda_norms)


# Widths of `--narrow` (kept where the architecture has the field): operator counts depend on the layers and
# the code path, not on widths, so a narrow copy of a shape counts the same operators in a fraction of the time
# (and fp16, whose matmuls the CPU computes very slowly, becomes countable).
NARROW_LM = {"hidden_size": 64, "ffn_dim": 128, "intermediate_size": 128, "num_attention_heads": 2,
             "num_key_value_heads": 2}
NARROW_VIT = {"embed_dim": 64, "num_heads": 2, "img_size": 32}


def _narrowed(shape):
    """The shape with the same depths, injection plan, prompt and batch, and narrow widths."""
    from epalm.models.language_models.frozen_lm import load_lm_config

    model = copy.deepcopy(shape.model)
    config = load_lm_config(model.lm.name, model.lm.config_overrides)
    overrides = {key: value for key, value in NARROW_LM.items() if hasattr(config, key)}
    if getattr(config, "word_embed_proj_dim", None) is not None:  # OPT: keep project_in/out where it had them
        same = config.word_embed_proj_dim == config.hidden_size
        overrides["word_embed_proj_dim"] = NARROW_LM["hidden_size"] if same else NARROW_LM["hidden_size"] // 2
    model.lm.config_overrides = {**model.lm.config_overrides, **overrides}
    encoder = model.encoders["image"]
    if encoder.type != "timm_vit":
        raise ValueError(f"--narrow knows timm ViT encoders only, not {encoder.type!r}")
    encoder.model_kwargs = {**encoder.model_kwargs, **NARROW_VIT}
    return replace(shape, model=model)


def _with_lm_layers(shape, layers: int):
    """The shape with an LM of `layers` decoder layers, injecting into all but the first (for the tests of
    what grows with depth)."""
    model = copy.deepcopy(shape.model)
    model.lm.config_overrides = {**model.lm.config_overrides, "num_hidden_layers": layers}
    model.start_layer_idx, model.end_layer_idx = 1, layers
    return replace(shape, model=model)


def measure_all(shape: str, dtypes, modes, layers: int | None = None, device: str = "cpu",
                narrow: bool = False, cuda_norms: bool = False) -> dict[str, dict]:
    """`{"mode/dtype": counts as a dict}` for every pair."""
    results = {}
    for mode in modes:
        for dtype in dtypes:
            count = measure(shape, dtype, mode, layers, device, narrow, cuda_norms)
            results[f"{mode}/{dtype}"] = {**asdict(count), "total_ops": count.total_ops,
                                          "total_kernels": count.total_kernels,
                                          "total_casts": count.total_casts, "total_copies": count.total_copies}
    return results


def measure_revision(rev: str, shape: str, dtypes, modes, layers: int | None = None, device: str = "cpu",
                     narrow: bool = False, cuda_norms: bool = False) -> dict[str, dict[str, Any]]:
    """The same counts with git revision `rev`'s code: its files extracted, this script run on them."""
    with tempfile.TemporaryDirectory(prefix="epalm-opcounts-") as tmp:
        for folders, prefix in ((LIBRARY_DIRS, "epalm/"), (("benchmarks", "configs"), "")):
            archive = subprocess.run(["git", "-C", str(REPO), "archive", f"--prefix={prefix}", rev, *folders],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        out = Path(tmp) / "counts.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--shape", shape, "--dtypes", *dtypes,
                "--modes", *modes, "--device", device, "--root", tmp, "--json-only", "--out", str(out)]
        if layers is not None:
            argv += ["--layers", str(layers)]
        if narrow:
            argv.append("--narrow")
        if cuda_norms:
            argv.append("--cuda-norms")
        env = {**os.environ, "PYTHONPATH": tmp}
        subprocess.run(argv, check=True, env=env, cwd=tmp)
        return json.loads(out.read_text())["counts"]


def _cells(c: dict[str, Any]) -> list[str]:
    casts = c["casts"]
    split = "+".join(str(casts.get(phase, 0)) for phase in ("forward", "backward", "optimizer"))
    return [str(c["total_ops"]), str(c.get("total_kernels", "-")), f"{c['total_casts']} ({split})",
            str(c["total_copies"])]


def format_counts(counts: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]] | None = None,
                  label: str = "before") -> str:
    """One row per mode/dtype: operators, non-view operators (~ kernel launches on a GPU), casts split by phase
    (forward+backward+optimizer) and same-dtype copies; then the same at `label` when given."""
    names = ["ops", "non-view", "casts (fwd+bwd+opt)", "copies"]
    header = ["mode/dtype", *names] + ([f"{name} @{label}" for name in names] if before is not None else [])
    rows = [header]
    for key, c in counts.items():
        row = [key, *_cells(c)]
        if before is not None:
            row += _cells(before[key]) if key in before else ["-"] * len(names)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def format_sites(counts: dict[str, dict[str, Any]], title: str) -> str:
    lines = [title]
    for key, c in counts.items():
        lines.append(f"  {key}:")
        for site, n in sorted(c["sites"].items(), key=lambda item: -item[1]):
            lines.append(f"    {n:5d}  {site}")
    return "\n".join(lines)


EXAMPLES = """examples:
  python -m benchmarks.op_counts --shape ref-small --narrow
  python -m benchmarks.op_counts --shape opt-2.7b --narrow --cuda-norms --against fd61110 --by-site"""


def argument_parser() -> argparse.ArgumentParser:
    from benchmarks.shapes import SHAPES
    from epalm.common.command_line import add_debug_flag, command_parser

    parser = command_parser("python -m benchmarks.op_counts", __doc__, EXAMPLES)
    parser.add_argument("--shape", default="ref-small", choices=sorted(SHAPES), metavar="SHAPE",
                        help="a benchmark shape (default ref-small)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES,
                        help="frozen weights' dtypes, trained under autocast to it (fp32: none)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="workloads counted (default: all)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: CUDA autocast's casts (norms in fp32), which the CPU's does not make")
    parser.add_argument("--layers", type=int, default=None, help="change the LM's depth (injection from layer 1)")
    parser.add_argument("--narrow", action="store_true",
                        help="the shape's depths with narrow widths: the same operator counts, far cheaper")
    parser.add_argument("--cuda-norms", dest="cuda_norms", action="store_true",
                        help="on the CPU, norms under autocast cast to fp32 as on CUDA (CudaNormPolicy)")
    parser.add_argument("--against", default=None, metavar="REV", help="also count with git revision REV's code")
    parser.add_argument("--by-site", dest="by_site", action="store_true", help="list the forward casts by site")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/op-counts-<shape>.json)")
    parser.add_argument("--root", type=Path, default=None, metavar="DIR",
                        help="count the code extracted in DIR (what --against runs)")
    parser.add_argument("--json-only", dest="json_only", action="store_true",
                        help="write the JSON only, print nothing (what --against runs)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = argument_parser().parse_args(argv)
    if args.root is not None:
        op_counter.ROOT = args.root.resolve()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # counts do not depend on threads; one thread disturbs the machine least
    try:
        counts = measure_all(args.shape, args.dtypes, args.modes, args.layers, args.device, args.narrow,
                             args.cuda_norms)
    finally:
        torch.set_num_threads(threads)
    from epalm.training.provenance import git_commit, package_versions

    result: dict[str, Any] = {"shape": args.shape, "layers": args.layers, "narrow": args.narrow,
                              "cuda_norms": args.cuda_norms, "device": args.device, "counts": counts,
                              "versions": package_versions(), "git_commit": git_commit()}
    if args.against:
        result["against"] = args.against
        result["against_counts"] = measure_revision(args.against, args.shape, args.dtypes, args.modes, args.layers,
                                                    args.device, args.narrow, args.cuda_norms)
    variant = ("-narrow" if args.narrow else "") + ("-cuda-norms" if args.cuda_norms else "")
    out = args.out or RESULTS / f"op-counts-{args.shape}{variant}-{args.device}.json"
    from benchmarks.report import write_json

    write_json(out, result)
    if args.json_only:
        return result
    print(f"operators per step, {args.shape}" + (" (narrow widths)" if args.narrow else "")
          + (" (CUDA's autocast policy for norms)" if args.cuda_norms else "")
          + (f" with {args.layers} LM layers" if args.layers else "")
          + f" on {args.device} (casts = dtype-changing copies: forward+backward+optimizer)")
    print(format_counts(counts, result.get("against_counts"), args.against or "before"))
    if args.by_site:
        print(format_sites(counts, "forward casts by site (project frame [module] source->target)"))
        if args.against:
            print(format_sites(result["against_counts"], f"forward casts by site at {args.against}"))
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    from epalm.common.command_line import run_command

    sys.exit(run_command(main))
