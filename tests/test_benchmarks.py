"""The benchmark runs end to end on a tiny shape and writes its JSON (nothing here is timed or compared)."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import run as bench
from benchmarks import workloads
from benchmarks.flops import peak_tflops
from benchmarks.ideas import first_layer_in_backward
from benchmarks.shapes import get_shape
from models.factory import build_model


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster than on two when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
