"""Few-shot integration of a new modality (models/fewshot, studies/fewshot): the isometries, the common width, the
hypernetwork's adapter, what few-shot adaptation may change, and the study end to end (`study --quick`)."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from epalm.common.errors import ConfigError
from epalm.demo.pretraining.video_encoder import REPO_ROOT
from epalm.models.encoders import EncoderConfig
from epalm.models.fewshot.common_width import CommonWidth, FeatureStatistics
from epalm.models.fewshot.hypernetwork import HyperNetwork
from epalm.models.fewshot.isometry import IsometricTransform
from epalm.models.fewshot.low_rank_adapter import TrainableAdapter
from epalm.models.fewshot.projector import SharedProjector
from epalm.studies.fewshot.__main__ import main
from epalm.studies.fewshot.caption_lm import CaptionLM, prefix_model
from epalm.studies.fewshot.config import (EpalmBaselineConfig, FewShotConfig, HypernetworkConfig, ModalitySource,
                                     PretrainConfig, ProjectorConfig, StudyConfig, TuneConfig, load_config)
from epalm.studies.fewshot.methods import Context, Shots, run_method

QUICK = REPO_ROOT / "configs" / "fewshot" / "quick.yaml"


@pytest.mark.parametrize("name", ["study.yaml", "quick.yaml"])
def test_shipped_fewshot_configs_resolve_and_every_key_is_documented(name):
    cfg = load_config([REPO_ROOT / "configs" / "fewshot" / name])
    assert cfg.new_name == "sensor" and set(cfg.seen) == {"image", "video", "audio"}
    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    for cls in (FewShotConfig, ModalitySource, ProjectorConfig, PretrainConfig, HypernetworkConfig,
                EpalmBaselineConfig, StudyConfig, TuneConfig):
        for field in dataclasses.fields(cls):
            assert f"`{field.name}`" in text or f".{field.name}`" in text, f"{cls.__name__}.{field.name}"
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config([REPO_ROOT / "configs" / "fewshot" / name], ["study.stpes=3"])


def test_study_configs_name_their_inputs_relative_to_themselves_from_any_folder(tmp_path, monkeypatch):
    """From another folder the study's LM and encoder configs were looked for under that folder."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config([QUICK])
    assert Path(cfg.lm) == REPO_ROOT / "models" / "demo_weights" / "opt-demo"
    assert Path(cfg.new_source.encoder_config) == REPO_ROOT / "configs" / "demo" / "sensor_encoder.yaml"
    assert Path(cfg.new_source.encoder_section().checkpoint).is_file()  # the encoder file's own paths too
    assert not Path(cfg.out_dir).is_absolute()  # an output: under the current folder
    # A path typed as an override is the user's, read from the current folder.
    assert load_config([QUICK], ["lm=my_lm"]).lm == "my_lm"


def test_isometric_transform_preserves_inner_products_and_is_reproducible_from_its_seed():
    x, y = torch.randn(5, 32), torch.randn(7, 32)
    for permute in (False, True):
        transform = IsometricTransform(32, seed="episode/3", permute=permute)
        torch.testing.assert_close(transform(x) @ transform(y).T, x @ y.T, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(transform.matrix @ transform.matrix.T, torch.eye(32), atol=1e-5, rtol=0)
        again = IsometricTransform(**transform.describe())
        assert torch.equal(again.matrix, transform.matrix)
    assert not torch.allclose(IsometricTransform(32, "episode/3").matrix, IsometricTransform(32, "episode/4").matrix)
    assert not torch.equal(IsometricTransform(32, "s").matrix, IsometricTransform(32, "s", permute=True).matrix)


@pytest.mark.parametrize("width_in", [12, 48, 96])
def test_common_width_takes_any_width_and_keeps_the_geometry_of_narrower_ones(width_in):
    features = torch.randn(200, width_in) * 3 + 1
    statistics = FeatureStatistics.of(features)
    common = CommonWidth(width_in, 48)(features, statistics)
    assert common.shape == (200, 48)
    assert common.pow(2).mean().item() == pytest.approx(1.0, rel=0.15)  # unit mean square per common coordinate
    assert torch.equal(CommonWidth(width_in, 48).matrix, CommonWidth(width_in, 48).matrix)  # fixed per (d, D)
    if width_in <= 48:  # an isometric embedding up to one scale: inner products keep their ratios
        normalised = (features - statistics.mean) / statistics.scale
        gram, expected = common @ common.T, normalised @ normalised.T
        torch.testing.assert_close(gram / gram[0, 0], expected / expected[0, 0], atol=1e-4, rtol=1e-4)


def _hypernetwork(pooling: str = "mean", solver: str = "ridge") -> HyperNetwork:
    torch.manual_seed(0)
    hypernetwork = HyperNetwork(width=16, hidden=24, caption_width=12, rank=4, summary_width=8, pooling=pooling,
                                solver=solver)
    for head in (hypernetwork.up_gate, hypernetwork.bias_head):  # zero at initialisation: wake them up
        torch.nn.init.normal_(head.weight, std=0.1)
    return hypernetwork


@pytest.mark.parametrize("pooling,solver,with_captions", [("mean", "ridge", True), ("attention", "covariance", True),
                                                          ("mean", "ridge", False)])
def test_generated_adapter_has_the_adapters_shapes_and_gradients_reach_the_hypernetwork(pooling, solver,
                                                                                          with_captions):
    hypernetwork = _hypernetwork(pooling, solver)
    support, captions = torch.randn(7, 16), torch.randn(7, 12)
    adapter = hypernetwork(support, captions if with_captions else None)
    assert adapter.shapes() == TrainableAdapter(4, 16, 24)().shapes() == {"down": (4, 16), "up": (24, 4),
                                                                           "bias": (24,)}
    projector = SharedProjector(16, 24, tokens=3, embed_size=10)
    tokens = projector(torch.randn(5, 16), adapter)
    assert tokens.shape == (5, 3, 10)
    tokens.pow(2).sum().backward()
    unused = {"spectrum"} if with_captions else {"code", "element", "query", "key", "log_ridge"}
    unused |= {"query", "key"} if pooling == "mean" else set()
    for name, parameter in hypernetwork.named_parameters():
        part = name.split(".")[1] if name.startswith("set_encoder.") else name.split(".")[0]
        if part in unused or (solver == "covariance" and part == "log_ridge"):
            continue
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_generated_adapter_turns_with_the_features():
    """The set encoder reads features through inner products: a rotated modality gets the rotated adapter, so the
    projector says the same for rotated queries (which is why isometries cannot be memorised)."""
    hypernetwork = _hypernetwork()
    projector = SharedProjector(16, 24, tokens=3, embed_size=10)
    support, captions, queries = torch.randn(9, 16), torch.randn(9, 12), torch.randn(4, 16)
    turn = IsometricTransform(16, seed=1)
    with torch.no_grad():
        plain = hypernetwork(support, captions).delta(queries)
        turned = hypernetwork(turn(support), captions).delta(turn(queries))
    torch.testing.assert_close(turned, plain, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_context():
    """The demo LM with a random projector pair and hypernetwork (nothing is trained here)."""
    cfg = load_config([QUICK], [f"projector.width=16", "projector.hidden=24", "projector.rank=4", "study.steps=3",
                                "study.batch_size=4", "study.max_new_tokens=4"])
    encoder = EncoderConfig(type="sensor_transformer", model_kwargs={"width": 40, "depth": 2, "heads": 2})
    model, tokenizer = prefix_model(str(REPO_ROOT / cfg.lm), encoder, cfg.projector.tokens)
    embed = model.lm.embedding_size
    torch.manual_seed(0)
    projectors = [SharedProjector(16, 24, cfg.projector.tokens, embed).requires_grad_(False) for _ in range(2)]
    hypernetwork = HyperNetwork(16, 24, embed, 4).requires_grad_(False)
    return Context(cfg, CaptionLM(model, tokenizer), projectors[0], projectors[1], hypernetwork, encoder)


def test_few_shot_generation_changes_only_the_adapter(tiny_context):
    ctx = tiny_context
    frozen = {"lm": ctx.lm.model, "pretrained": ctx.pretrained, "adapted": ctx.adapted,
              "hypernetwork": ctx.hypernetwork}
    before = {name: copy.deepcopy(module.state_dict()) for name, module in frozen.items()}
    embedding = ctx.lm.model.lm.model.get_input_embeddings()
    captions = ["a high pure move up", "two low buzzy moves to the left", "three high clean moves down",
                "a low buzzing move rightwards", "two high pure moves upwards"]
    ids = [ctx.lm.tokenizer(c, add_special_tokens=False)["input_ids"] for c in captions]
    shots = Shots(torch.randn(5, 2, 40), captions, torch.stack([embedding(torch.tensor(i)).mean(0) for i in ids]))
    evaluation = torch.randn(3, 2, 40)
    for method in ("hypernetwork", "hypernetwork_finetuned", "lora"):
        predictions, info = run_method(ctx, method, shots, evaluation, seed=0, steps=3, lr=1e-2)
        assert len(predictions) == 3
        if method != "hypernetwork":
            assert len(info["losses"]) == 3 and info["adapter_change"] > 0  # the adapter, and only it, trained
    for name, module in frozen.items():
        after = module.state_dict()
        assert all(torch.equal(after[key], value) for key, value in before[name].items()), name


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("fewshot")
    summary = main(["study", "--quick", "--set", f"out_dir={out}"])
    return out, summary


def test_study_quick_runs_every_stage_and_method_end_to_end(quick_study):
    out, summary = quick_study
    study = out / "study"
    assert (study / "curve.png").stat().st_size > 0 and (study / "summary.md").is_file()
    table = summary["tables"]["attribute_accuracy"]
    assert set(table) == {"hypernetwork", "hypernetwork_finetuned", "scratch", "pretrained_finetuned", "lora",
                          "epalm_injection", "blind"}
    assert set(table["scratch"]) == {"4", "8", "all"}
    result = json.loads((study / "scratch" / "k8-seed0" / "sensor_caption-results.json").read_text())
    assert result["metrics"]["attribute_accuracy"] * 100 == pytest.approx(table["scratch"]["8"]["mean"])
    assert {"CIDEr", "BLEU_4", "ROUGE_L", "attribute_accuracy_per_attribute"} <= set(result["metrics"])
    assert len(result["predictions"]) == 12 and len(result["shot_pairs"]) == 8
    assert result["config"]["study"]["steps"] == 3 and result["steps"] == 3
    stage2 = json.loads((out / "stage2_hypernetwork" / "report.json").read_text())
    assert all(episode["isometry"]["seed"].startswith("fewshot-isometry/0/") for step in stage2["episodes"]
               for episode in step)


def test_an_encoder_of_a_new_width_plugs_in_with_a_config_only(quick_study, tmp_path):
    """The same pipeline on a new encoder of width 40 (random, so its numbers mean nothing): only the config
    changes, and the stages trained on the seen modalities are reused as they are."""
    out, _ = quick_study
    stages = {p: p.stat().st_mtime_ns for p in out.glob("stage*/weights.safetensors")}
    summary = main(["study", "--quick", "--set", f"out_dir={out}", "--set", "new.sensor.encoder_config=",
                    "--set", "new.sensor.encoder={type: sensor_transformer, model_kwargs: {width: 40, depth: 2, "
                             "heads: 2}}", "--set", "study.methods=[hypernetwork, scratch]", "--set", "study.shots=[4]",
                    "--set", "study.reference_steps=0"])
    assert {p: p.stat().st_mtime_ns for p in out.glob("stage*/weights.safetensors")} == stages
    assert set(summary["tables"]["CIDEr"]) == {"hypernetwork", "scratch"}
    result = json.loads((out / "study" / "hypernetwork" / "k4-seed0" / "sensor_caption-results.json").read_text())
    assert result["config"]["new"]["sensor"]["encoder"]["model_kwargs"]["width"] == 40
