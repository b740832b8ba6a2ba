"""Operator counts of the training step and generation (benchmarks/op_counts.py): deterministic, so what they
say about casts is asserted here. Tiny model, one thread."""
from __future__ import annotations

import contextlib
import json

import pytest

import epalm.models.epalm
from benchmarks import op_counts


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_cached_step_casts_no_more_than_the_step_that_encodes(dtype):
    encode = op_counts.measure("tiny", dtype, "train_encode")
    cached = op_counts.measure("tiny", dtype, "train_cached")
    assert cached.total_casts <= encode.total_casts
    assert cached.total_ops < encode.total_ops  # and it does not run the encoder
    # fp32 cached features are cast once for the connector, not once per connector Linear
    assert sum(n for site, n in cached.sites.items() if "connect " in site) == 1


@pytest.mark.parametrize("mode, dtype", [("train_encode", "bfloat16"), ("train_cached", "float32"),
                                         ("generate", "bfloat16")])
def test_casts_per_step_do_not_grow_with_the_number_of_lm_layers(mode, dtype):
    shallow = op_counts.measure("tiny", dtype, mode, layers=2)
    deep = op_counts.measure("tiny", dtype, mode, layers=5)
    assert deep.total_ops > shallow.total_ops  # more layers, more injection layers: more work
    assert deep.casts == shallow.casts and deep.copies == shallow.copies
    assert not any("layers.*" in site for site in deep.sites)  # nothing cast inside a layer


def test_under_cudas_norm_policy_the_frozen_half_lm_adds_no_casts(monkeypatch):
    """CudaNormPolicy gives the CPU's autocast CUDA's rule for norms (fp32 in, fp32 out). The frozen LM and
    encoder held in half precision run outside autocast, so the rule finds nothing to cast; under autocast (as
    before) it casts around every norm, in every layer."""
    native = op_counts.measure("tiny", "float16", "train_encode", layers=3, cuda_norms=True)
    assert native.casts == op_counts.measure("tiny", "float16", "train_encode", layers=3).casts
    monkeypatch.setattr(epalm.models.epalm, "native_precision", lambda module: contextlib.nullcontext())
    shallow = op_counts.measure("tiny", "float16", "train_encode", layers=3, cuda_norms=True)
    deep = op_counts.measure("tiny", "float16", "train_encode", layers=5, cuda_norms=True)
    assert native.total_casts < shallow.total_casts < deep.total_casts
    assert any("self_attn_layer_norm" in site for site in deep.sites)


def test_counts_are_deterministic_and_split_by_phase():
    first = op_counts.measure("tiny", "bfloat16", "train_cached")
    second = op_counts.measure("tiny", "bfloat16", "train_cached")
    assert first == second
    assert set(first.ops) == {"forward", "backward", "optimizer"}
    assert first.operators["_to_copy"] >= first.total_casts - first.operators.get("copy_", 0)


def test_narrow_widths_count_the_same_operators():
    """--narrow (cheap counting of the full-size shapes) relies on counts not depending on widths; the full
    ref-small shape gave the same counts as its narrow copy too (docs/benchmarks.md)."""
    wide = op_counts.measure("tiny", "bfloat16", "train_encode")
    narrow = op_counts.measure("tiny", "bfloat16", "train_encode", narrow=True)
    assert wide == narrow


def test_command_line_writes_the_counts(tmp_path, capsys):
    out = tmp_path / "counts.json"
    result = op_counts.main(["--shape", "tiny", "--dtypes", "float32", "--modes", "train_cached", "--by-site",
                             "--out", str(out)])
    assert json.loads(out.read_text())["counts"] == result["counts"]
    printed = capsys.readouterr().out
    assert "train_cached/float32" in printed and "forward casts by site" in printed
