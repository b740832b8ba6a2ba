"""The LM-size sweep: three tiny OPTs on the synthetic image VQA data, the table, the plot, skipping."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

from epalm.models.param_count import count_parameters
from tests.tiny_run import build_tiny_setup, tiny_config
from epalm.studies import ablation
from epalm.training.run_config import resolve_config

REPO = Path(__file__).resolve().parent.parent
DEMO_SIZES = REPO / "configs" / "ablation" / "demo_sizes"
QUICK = ["--set", "eval.every_epoch=false", "--set", "task.max_eval_samples=6"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the launcher test's subprocess (one_torch_thread: this process)


def _run_files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and not p.name.startswith("ablation.")}


def test_sweep_writes_table_and_plot_then_skips_finished_sizes(setup, tmp_path):
    base = tiny_config(setup, tmp_path / "base.yaml", max_steps=2)
    out = tmp_path / "sweep"
    argv = ["--config", str(base), "--sizes", str(DEMO_SIZES), "--output_dir", str(out), *QUICK]
    rows = ablation.main(argv)

    assert [r["size"] for r in rows] == ["opt-h32-l2", "opt-h64-l3", "opt-h128-l4"]  # ordered by LM parameters
    assert all(r["status"] == "trained" and r["metric"] == "vqa_accuracy" for r in rows)
    assert all(isinstance(r["value"], float) for r in rows)
    # The counts made on the meta device are those of the model each run really trained.
    run_cfg = resolve_config(["--config", str(out / "opt-h64-l3" / "config.yaml")])
    assert run_cfg.model.lm.config_overrides["num_hidden_layers"] == 3
    from epalm.models.factory import build_model

    model, _ = build_model(run_cfg.model)
    assert rows[1]["lm_parameters"] == count_parameters(model.lm).total
    assert rows[1]["trainable_parameters"] == count_parameters(model).trainable
    with open(out / "ablation.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [t["size"] for t in table] == [r["size"] for r in rows]
    assert len((out / "ablation.md").read_text().strip().splitlines()) == 2 + len(rows)
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = _run_files(out)
    again = ablation.main(argv)
    assert [r["status"] for r in again] == ["existing"] * 3
    assert [r["value"] for r in again] == [r["value"] for r in rows]
    assert _run_files(out) == before  # nothing retrained, rewritten or added in the run folders


def test_a_size_whose_depth_does_not_fit_fails_before_any_training(setup, tmp_path):
    base = tiny_config(setup, tmp_path / "base.yaml", max_steps=1)  # absolute injection layers 0..3
    shallow = tmp_path / "two_layers.yaml"
    shallow.write_text(yaml.safe_dump({"model": {"lm": {"config_overrides": {"num_hidden_layers": 2}}}}))
    out = tmp_path / "sweep"
    with pytest.raises(ValueError, match="two_layers"):
        ablation.main(["--config", str(base), "--lms", str(DEMO_SIZES / "opt-h32-l2.yaml"), str(shallow),
                       "--output_dir", str(out)])
    assert not list(out.rglob("checkpoints"))


def test_a_size_through_a_launcher_subprocess(setup, tmp_path):
    base = tiny_config(setup, tmp_path / "base.yaml", max_steps=1)
    out = tmp_path / "sweep"
    rows = ablation.main(["--config", str(base), "--lms", str(DEMO_SIZES / "opt-h32-l2.yaml"), "--output_dir", str(out),
                          "--launcher", sys.executable, *QUICK])
    assert rows[0]["status"] == "trained" and (out / "opt-h32-l2" / "eval" / "karpathy_test_metrics.json").is_file()


def test_shipped_sizes_resolve_to_hub_ids_and_count_on_meta(tmp_path):
    sizes = ablation.resolve_sizes(["opt-125m", "opt-350m", "llama-2-7b"], None, random_init=False)
    assert [s.overlay["model"]["lm"]["name"] for s in sizes] == ["facebook/opt-125m", "facebook/opt-350m",
                                                                 "meta-llama/Llama-2-7b-hf"]
    config = REPO / "configs" / "ablation" / "lm_sizes_vqa.yaml"
    counts = {}
    for size in sizes[:2]:
        overlay = tmp_path / f"{size.name}.yaml"
        overlay.write_text(yaml.safe_dump(size.overlay))
        cfg = resolve_config(["--config", str(config), "--config", str(overlay)])
        counts[size.name] = ablation.describe(size, cfg, tmp_path / size.name).lm_parameters
    # Published sizes: OPT-125m 125.2M, OPT-350m 331.2M parameters.
    assert counts["opt-125m"] == pytest.approx(125.2e6, rel=0.002)
    assert counts["opt-350m"] == pytest.approx(331.2e6, rel=0.002)
    random = ablation.resolve_sizes(["opt-125m"], None, random_init=True)[0].overlay["model"]["lm"]
    assert random["random_init"] and random["name"].endswith("opt-125m.json")
