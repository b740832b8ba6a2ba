"""`main.py export`: the folder's contents, loading it in a fresh process (identical answers), its checks, and the
Hugging Face Hub upload, mocked up to huggingface_hub's own calls (nothing leaves the machine)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from huggingface_hub import HfApi

from epalm.common.command_line import run_command
from epalm.dataset.tasks import TASK_READERS
from epalm.inference import Bridge, export
from epalm.inference.checkpoint_source import find_source
from epalm.training import run
from tests.tiny_run import build_tiny_setup, tiny_config

REPO = Path(__file__).resolve().parent.parent
SAMPLED = {"do_sample": True, "temperature": 1.0, "top_k": 0, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    setup = build_tiny_setup(root)
    # trained, then tested on karpathy_test: the card has a metric
    config = tiny_config(setup, root / "c.yaml", task_keys={"val_split": ""}, max_steps=2)
    run.main(["--config", str(config), "--output_dir", str(root / "run")])
    split = TASK_READERS.build("vqa_v2", setup["data"], "karpathy_test")
    asked = [(sample.prompt, str(split.media_path(sample))) for sample in split.samples[:4]]
    return {"root": root, "run": root / "run", "config": config, "asked": asked}


def _answers(bridge: Bridge, asked) -> list[str]:
    """Greedy, then sampled with seeds: what the fresh process must reproduce."""
    greedy = bridge.ask([q for q, _ in asked], images=[i for _, i in asked], max_new_tokens=6)
    sampled = [bridge.ask(q, images=i, seed=seed, **SAMPLED) for seed, (q, i) in enumerate(asked)]
    return greedy + sampled


FRESH = """
import json, sys
from epalm.inference import Bridge
from tests.test_export import _answers
asked = json.loads(sys.argv[2])
print(json.dumps(_answers(Bridge.load(sys.argv[1], device="cpu"), asked)))
"""


def test_export_writes_the_folder_and_a_fresh_process_answers_identically(tiny):
    out = tiny["root"] / "shared" / "my-bridge"
    printed = io.StringIO()
    info = export.main([str(tiny["run"]), "--out", str(out)], stdout=printed)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "bridge.json", "epalm_config.json",
                                                     "model.safetensors", "run_config.yaml", "training_config.yaml"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
    assert info["trained_steps"] == 2 and info["tokenizer_additions"]["qa_separator"]["token"] == "</a>"
    assert info["metrics"]["karpathy_test"]["name"] == "vqa_accuracy"
    assert info["lm"]["name"] == "opt" and info["encoders"]["image"]["name"] == "vit_tiny_patch16_224"
    card = (out / "README.md").read_text()
    for needed in ("vqa_v2", "vqa_accuracy", "Trained for 2 optimizer steps", "python main.py --config "
                   "training_config.yaml", "Bridge.load(", "trainable parameters"):
        assert needed in card, needed
    reading = yaml.safe_load((out / "run_config.yaml").read_text())
    assert set(reading) == {"seed", "task", "eval"} and "data_dir" not in reading["task"]
    assert find_source(str(out), []).kind == "export"
    in_process = _answers(Bridge.load(tiny["run"], device="cpu"), tiny["asked"])
    assert any(in_process)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", FRESH, str(out), json.dumps(tiny["asked"])], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == in_process


def test_an_export_is_refused_when_its_tokenizer_differs_and_never_half_written(tiny):
    out = tiny["root"] / "checked"
    export.export(str(tiny["run"]), out)
    manifest = json.loads((out / "bridge.json").read_text())
    manifest["tokenizer_additions"]["qa_separator"]["id"] += 1
    (out / "bridge.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="tokenizer loaded here differs"):
        Bridge.load(out, device="cpu")
    assert run_command(export.main, [str(tiny["run"]), "--out", str(out)]) == 2  # exists: --overwrite to replace
    with mock.patch.object(export, "model_card", side_effect=RuntimeError("disk full")):
        with pytest.raises(RuntimeError):
            export.export(str(tiny["run"]), out, overwrite=True)
    assert json.loads((out / "bridge.json").read_text())["tokenizer_additions"]["qa_separator"]["id"] == \
        manifest["tokenizer_additions"]["qa_separator"]["id"]  # the old folder stands, untouched
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".checked")]
    export.export(str(tiny["run"]), out, overwrite=True)
    Bridge.load(out, device="cpu")
    again = export.export(str(out), tiny["root"] / "re-exported")  # an export of an export keeps the run's facts
    assert again["trained_steps"] == 2 and again["metrics"] == manifest["metrics"]
    assert "on `" + str(tiny["root"] / "data") in (tiny["root"] / "re-exported" / "README.md").read_text()


def test_push_to_hub_calls_huggingface_hub_and_reports_failures(tiny, capsys):
    out = tiny["root"] / "pushed"
    commit = mock.Mock(commit_url="https://huggingface.co/me/bridge/commit/abc")
    with mock.patch.object(HfApi, "create_repo") as create, mock.patch.object(HfApi, "upload_folder",
                                                                             return_value=commit) as upload:
        info = export.main([str(tiny["run"]), "--out", str(out), "--push_to_hub", "me/bridge", "--private"],
                           stdout=io.StringIO())
    create.assert_called_once_with("me/bridge", private=True, exist_ok=True, repo_type="model")
    assert upload.call_count == 1 and upload.call_args.kwargs["folder_path"] == str(out)
    assert upload.call_args.kwargs["repo_id"] == "me/bridge" and upload.call_args.kwargs["repo_type"] == "model"
    assert info["pushed"] == commit.commit_url
    with mock.patch.object(HfApi, "create_repo", side_effect=ConnectionError("Name or service not known")):
        status = run_command(export.main, [str(tiny["run"]), "--out", str(out), "--overwrite",
                                           "--push_to_hub", "me/bridge"])
    err = capsys.readouterr().err
    assert status == 2 and "error: --push_to_hub me/bridge: the upload failed (ConnectionError" in err
    assert (out / "model.safetensors").is_file()  # the folder is complete all the same
    assert run_command(export.main, [str(tiny["run"]), "--out", str(out), "--private", "--overwrite"]) == 2


def test_a_reference_pth_exports_to_a_folder_that_loads(tiny):
    import torch

    from epalm.models.checkpoint import reference_state

    bridge = Bridge.load(tiny["run"], device="cpu")
    pth = tiny["root"] / "released.pth"
    torch.save({"model": {k: v.clone() for k, v in reference_state(bridge.loaded.model).items()}}, pth)
    out = tiny["root"] / "from-pth"
    info = export.main([str(pth), "--config", str(tiny["config"]), "--out", str(out)], stdout=io.StringIO())
    assert info["injection_mode"] == "epalm" and info["exported_from"]["kind"] == "reference"
    assert yaml.safe_load((out / "run_config.yaml").read_text())["task"]["prompt_template"] == "{question}?</a>"
    loaded = Bridge.load(out, device="cpu")
    question, image = tiny["asked"][0]
    reference = Bridge.load(pth, config=[str(tiny["config"])], device="cpu")
    assert loaded.ask(question, images=image) == reference.ask(question, images=image)
