"""The benchmark runs end to end on a tiny shape and writes its JSON (nothing here is timed or compared)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import epalm.models.epalm
from benchmarks import ideas
from benchmarks import run as bench
from benchmarks import workloads
from benchmarks.flops import matmul_weights, peak_tflops, training_step_flops
from benchmarks.ideas import first_layer_in_backward
from benchmarks.report import REFERENCE_RATIOS, format_table, ratios, reference_gaps, target_results
from benchmarks.shapes import get_shape
from epalm.models.factory import build_model
from epalm.models.param_count import build_on_meta
from epalm.models.precision import native_precision


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_tiny_benchmark_writes_every_mode_and_ratio(tmp_path):
    out = tmp_path / "results" / "tiny.json"
    returned = bench.main(["--shape", "tiny", "--repeats", "1", "--warmup", "0", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["modes"].keys() == returned["modes"].keys() == set(bench.CAUSAL_MODES + bench.EPALM_MODES)
    for name, mode in result["modes"].items():
        assert len(mode["times_s"]) == 1 and mode["median_s"] > 0, name
        assert mode["samples_per_s"] > 0 and mode["peak_memory_mb"] > 0 and mode["start_memory_mb"] > 0, name
    for name in ("train_encode", "train_cached", "train_epalm"):
        assert result["modes"][name]["flops"] > 0 and "achieved_tflops" in result["modes"][name]
    assert set(result["ratios"]) == {"feature_cache_train_speedup", "feature_cache_pipeline_speedup",
                                     "kv_cache_generation_speedup", "epalm_over_causal_train_time",
                                     "epalm_over_causal_generation_time"}
    assert result["shape"]["name"] == "tiny" and result["machine"]["threads"] == 1
    assert result["notes"]["pipeline_samples"] == 2 and result["model"]["parameters"]["connector"]["trainable"] > 0
    assert [p.name for p in out.parent.iterdir()] == ["tiny.json"]  # written atomically, no temporary left


def test_only_selected_modes_are_measured(tmp_path):
    result = bench.main(["--shape", "tiny", "--repeats", "1", "--warmup", "0", "--threads", "2",
                         "--modes", "train_epalm", "--out", str(tmp_path / "r.json")])
    assert list(result["modes"]) == ["train_epalm"] and result["ratios"] == {}
    assert result["machine"]["threads"] == 2 and torch.get_num_threads() == 1  # the caller's setting is restored


def test_generations_compared_have_equal_lengths():
    shape = get_shape("tiny")
    model, _ = build_model(shape.model, load_tokenizer_if_missing=False)
    inputs = workloads.synthetic_inputs(model, 2, 5, torch.device("cpu"))
    for use_cache in (True, False):
        tokens = workloads.generation(model, inputs, new_tokens=6, num_beams=2, use_cache=use_cache)()
        assert tokens.shape == (2, 6)


def test_backward_starts_at_the_first_injection_layer_without_a_prompt():
    shape = get_shape("tiny")
    for prompt, expected in ((True, 0), (False, 1)):
        cfg = shape.model.__class__(**{**shape.model.__dict__, "prompt_tuning": prompt, "start_layer_idx": 1})
        model, _ = build_model(cfg, load_tokenizer_if_missing=False)
        inputs = workloads.synthetic_inputs(model, 2, 5, torch.device("cpu"))
        assert model.plan.first_layer == 1
        assert first_layer_in_backward(model, inputs) == expected


def test_peak_table_matches_device_names():
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("Some Future GPU") is None


@pytest.mark.parametrize("name, lm_weights, encoder_weights, batch, trainable", [
    ("opt-2.7b", 2.65e9, 85.5e6, 64, 24.9e6),  # configs/base/epalm.yaml: 6 Linears + MLP prompt
    ("opt-6.7b-pt-l", 6.65e9, 302.8e6, 2, 4.24e6),  # epalm_pt_l.yaml: one shared Linear + 10 prompt vectors
])
def test_full_size_shapes_are_the_paper_recipes(name, lm_weights, encoder_weights, batch, trainable):
    shape = get_shape(name)
    model = build_on_meta(shape.model)  # shapes only: milliseconds for billions of weights
    assert matmul_weights(model.lm) == pytest.approx(lm_weights, rel=0.01)
    assert matmul_weights(model.encoder_for()) == pytest.approx(encoder_weights, rel=0.01)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == pytest.approx(trainable, rel=0.01)
    assert shape.batch_size == batch and shape.modes
    flops = training_step_flops(model, shape.batch_size, shape.text_len)
    assert flops.lm == pytest.approx(4 * lm_weights * batch * (model.prefix_len + shape.text_len), rel=0.02)


def test_gpu_targets_are_judged_on_the_gpu_only():
    mfu, memory = get_shape("opt-2.7b"), get_shape("opt-6.7b-pt-l")
    low, cached = target_results({"feature_cache_train_speedup": 0.87}, {"train_encode": {"mfu": 0.31}}, mfu, "cuda")
    assert (low["value"], low["met"], low["bound"]) == (0.31, False, ">= 0.4")
    assert (cached["value"], cached["met"]) == (0.87, False)  # issue 9's H200: the cached step was slower
    (fits,) = target_results({}, {"train_encode": {"peak_memory_mb": 14_500.0}}, memory, "cuda")
    assert fits["met"] is True
    (over,) = target_results({}, {"train_encode": {"peak_memory_mb": 19_500.0}}, memory, "cuda")
    assert over["met"] is False  # 20 GB is 19,073 MiB
    (cpu,) = target_results({}, {"train_encode": {"peak_memory_mb": 100.0}}, memory, "cpu")
    assert cpu["value"] is None and cpu["met"] is None  # a CPU's resident set says nothing of GPU memory


def test_gpu_check_script_runs_its_shapes(tmp_path):
    """benchmarks/gpu_check.sh, pointed at the CPU and the tiny shape: the script a GPU session runs as is."""
    env = {**os.environ, "SHAPES": "tiny", "DEVICE": "cpu", "DTYPE": "float32", "REPEATS": "1", "WARMUP": "0",
           "RESULTS": str(tmp_path), "PYTHON": sys.executable}
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "tiny-cpu-float32.json").read_text())
    assert result["shape"]["name"] == "tiny" and "train_encode" in result["modes"]


def test_ratios_to_the_reference_are_only_at_equal_precision():
    shape = get_shape("ref-small")
    modes = {name: {"median_s": s, "median_cpu_s": s, "samples_per_s": 1.0, "tokens_per_s": None,
                    "peak_memory_mb": 1.0, "start_memory_mb": 1.0}
             for name, s in (("train_encode", 0.5), ("generate", 2.0))}
    fp32 = ratios(modes, shape, "float32")  # the side-by-side run of 2026-12-04 (docs/benchmarks.md)
    assert fp32["train_speedup_vs_reference"] == pytest.approx(1.38 / 0.5)
    assert fp32["generate_speedup_vs_reference"] == pytest.approx(16.08 / 2.0)
    bf16 = ratios(modes, shape, "bfloat16")  # the reference cast to bf16 (model.to), as it does it
    assert bf16["train_speedup_vs_reference"] == pytest.approx(0.63 / 0.5)
    assert bf16["generate_speedup_vs_reference"] == pytest.approx(7.40 / 2.0)
    assert not ratios(modes, shape, "float16").keys() & REFERENCE_RATIOS.keys()
    gaps = reference_gaps(modes, shape, "float16")  # never measured in fp16: left out, and said so
    assert set(gaps) == {"train_speedup_vs_reference", "generate_speedup_vs_reference"}
    assert "float16" in gaps["generate_speedup_vs_reference"] and not reference_gaps(modes, shape, "bfloat16")
    fp16 = ratios(modes, shape, "float16")
    result = {"modes": modes, "ratios": fp16, "reference_gaps": gaps, "repeats": 1, "shape": {"name": shape.name},
              "targets": target_results(fp16, modes, shape, "cpu"),
              "machine": {"device": "cpu", "device_name": "CPU", "dtype": "float16", "threads": 1,
                          "load_before": (0.0,), "load_after": (0.0,)}}
    generate_row = next(line for line in format_table(result).splitlines()
                        if line.startswith("generate_speedup_vs_reference"))
    assert "no reference at float16: not compared" in generate_row


def test_gpu_speed_ideas_run_beside_their_baselines(tmp_path):
    result = ideas.main(["--shape", "tiny", "--ideas", "frozen_autocast", "fused_adamw", "--dtype", "bfloat16",
                         "--repeats", "1", "--warmup", "0", "--out", str(tmp_path / "ideas.json")])
    rows = {(r["idea"], r["measure"], r["variant"]): r for r in result["rows"]}
    assert rows[("frozen_autocast", "train_encode", "native")]["baseline"]
    assert not rows[("frozen_autocast", "train_encode", "under_autocast")]["baseline"]
    assert {("fused_adamw", m, v) for m in ("train_encode", "train_cached") for v in ("default", "fused")} <= set(rows)
    assert result["dtype"] == "bfloat16"
    assert epalm.models.epalm.native_precision is native_precision  # the variant's replacement is undone


def test_interleaved_timing_gives_every_mode_its_repetitions(tmp_path):
    result = bench.main(["--shape", "tiny", "--repeats", "2", "--warmup", "0", "--threads", "1", "--interleave",
                         "--modes", "train_encode", "train_cached", "--out", str(tmp_path / "r.json")])
    assert result["interleaved"] and list(result["modes"]) == ["train_encode", "train_cached"]
    for mode in result["modes"].values():
        assert len(mode["times_s"]) == len(mode["cpu_times_s"]) == 2 and mode["peak_memory_mb"] > 0
    assert "feature_cache_train_speedup" in result["ratios"]
