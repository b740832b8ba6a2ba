"""Every shipped config resolves strictly, and every config key is documented."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from epalm.models.config import ModelConfig
from epalm.models.language_models.frozen_lm import LanguageModelConfig
from epalm.models.language_models.lm_training import LoraSettings
from epalm.training.run_config import EvalConfig, RunConfig, TaskConfig, TrainConfig, resolve_config

# configs/fewshot/ holds the few-shot study's own configuration (tests/test_fewshot.py resolves those), and so does
# DMI's recipe (configs/recipes/dmi.yaml: tests/test_recipes.py runs it).
STUDY_CONFIGS = (Path("configs/recipes/dmi.yaml"),)
CONFIGS = sorted(p for p in Path("configs").rglob("*.yaml")
                 if p.parent.name not in ("base", "accelerate", "fewshot") and p not in STUDY_CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p) for p in CONFIGS])
def test_shipped_config_resolves(path):
    cfg = resolve_config(["--config", str(path)])
    assert isinstance(cfg, RunConfig)


def test_every_key_is_documented():
    text = Path("docs/configuration.md").read_text() + Path("docs/model.md").read_text()
    for cls in (RunConfig, TaskConfig, TrainConfig, EvalConfig, ModelConfig, LanguageModelConfig, LoraSettings):
        for field in dataclasses.fields(cls):
            assert f"`{field.name}`" in text, f"{cls.__name__}.{field.name} is not in docs/configuration.md"


def test_flags_and_overrides_land_in_the_config():
    cfg = resolve_config(["--config", "configs/image/epalm_pt_l_vqa.yaml", "--text_model", "facebook/opt-1.3b",
                          "--data_dir", "/data", "--save_best", "--set", "train.lr=3e-4", "--set", "model.mlp=yes"])
    assert cfg.model.lm.name == "facebook/opt-1.3b" and cfg.task.data_dir == "/data" and cfg.save_best
    assert cfg.train.lr == 3e-4 and cfg.model.mlp is True
    assert cfg.model.shared_connector and cfg.train.epochs == 35  # from the included base and the file


REPO = Path(__file__).resolve().parent.parent


def test_config_paths_are_read_relative_to_the_file_from_any_folder(tmp_path, monkeypatch):
    """The demo configs named their weights relative to the current folder: from another folder,
    `error: model.lm.name models/demo_weights/opt-demo: no such file or folder`."""
    from epalm.training.preflight import preflight

    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(["--config", str(REPO / "configs/demo/image_caption.yaml"), "--data_dir", str(tmp_path)])
    assert Path(cfg.model.lm.name) == REPO / "models" / "demo_weights" / "opt-demo"
    assert Path(cfg.model.encoders["image"].checkpoint).is_file()
    preflight(cfg)  # every named path exists
    # Outputs are never looked up: they go under the current folder, not into the repository.
    assert (cfg.output_dir, cfg.train.feature_cache_dir) == ("outputs/run", ".cache/features")
    # A user's config: a path beside the file wins; one found nowhere is kept as written; flags are as typed.
    project = tmp_path / "project"
    (project / "photos").mkdir(parents=True)
    (project / "run.yaml").write_text(f"include: {REPO / 'configs/demo/image_vqa.yaml'}\n"
                                      "task: {data_dir: photos, media_root: elsewhere}\noutput_dir: runs/mine\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    cfg = resolve_config(["--config", str(project / "run.yaml")])
    assert (cfg.task.data_dir, cfg.task.media_root, cfg.output_dir) == (str(project / "photos"), "elsewhere",
                                                                        "runs/mine")
    assert resolve_config(["--config", str(project / "run.yaml"), "--data_dir", "photos"]).task.data_dir == "photos"
