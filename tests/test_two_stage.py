"""Two-stage training (`--init_from`): a run starts from the bridge of an earlier run whatever its LM trained as,
frozen -> LoRA and frozen -> full, and says what it loaded and what starts fresh; `--checkpoint` stays strict."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from epalm.common.errors import ConfigError
import epalm.training.run as entry
from tests.tiny_run import build_tiny_setup, tiny_config

# Stage 1 as LLaVA's: the patch tokens of the ViT's block -2 through the GELU projector, LM frozen, 3 steps.
STAGE1 = ["--set", "model.readout=patches", "--set", "model.connector=mlp", "--set", "train.max_steps=3",
          "--set", "task.val_split=", "--set", "task.max_eval_samples=4"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_stage")
    setup = build_tiny_setup(root)
    config = str(tiny_config(setup, root / "c.yaml"))
    entry.main(["--config", config, "--output_dir", str(root / "stage1"), *STAGE1])
    return config, root / "stage1"


def _weights(run):
    return load_file(str(run / "checkpoints" / "last" / "trainable" / "model.safetensors"))


def test_a_lora_run_starts_from_a_frozen_lm_runs_projector_and_trains(stage1, tmp_path, capsys):
    config, first = stage1
    # the bridge's learning rates at 0: the projector it ends with is the one it started from
    result = entry.main(["--config", config, "--output_dir", str(tmp_path / "stage2"), *STAGE1,
                         "--init_from", str(first), "--set", "model.lm.train=lora", "--set", "train.lr=0",
                         "--set", "train.prompt_lr=0", "--set", "train.lm_lr=1e-2"])
    printed = capsys.readouterr().out
    assert result["steps"] == 3
    assert "loaded 5 bridge tensors (connectors.image.mlp.0.bias" in printed and "prompt_module" in printed
    assert "starting fresh: 12 tensors (lm.model." in printed and "lora_A" in printed
    assert "the earlier run's LM was frozen" in printed
    before, after = _weights(first), _weights(tmp_path / "stage2")
    assert set(before) == set(after) and any(k.startswith("connectors.image.mlp.") for k in before)
    for key in before:  # stage 1's projector and prompt, as stage 2 started from them
        assert torch.equal(before[key], after[key]), key
    adapters = load_file(str(tmp_path / "stage2" / "checkpoints" / "last" / "trainable" / "lora" /
                             "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapters.items())  # B starts at 0


def test_a_full_fine_tuning_run_starts_from_the_projector_too(stage1, tmp_path, capsys):
    config, first = stage1
    result = entry.main(["--config", config, "--output_dir", str(tmp_path / "full"), *STAGE1,
                         "--init_from", str(first / "checkpoints" / "last" / "trainable"),
                         "--set", "model.lm.train=full", "--set", "train.lm_lr=1e-4"])
    assert result["steps"] == 3 and result["test"]["num_predictions"] == 4
    assert "loaded 5 bridge tensors" in capsys.readouterr().out


def test_checkpoint_stays_strict_and_init_from_checks_the_bridge(stage1, tmp_path):
    config, first = stage1
    with pytest.raises(ConfigError, match="model.lm.train: checkpoint 'frozen', configured 'lora'"):
        entry.main(["--config", config, "--output_dir", str(tmp_path / "strict"), *STAGE1,
                    "--checkpoint", str(first / "checkpoints" / "last" / "trainable"),
                    "--set", "model.lm.train=lora"])
    with pytest.raises(ConfigError, match=r"holds another bridge.*\n.*model.connector: checkpoint 'mlp', configured"):
        entry.main(["--config", config, "--output_dir", str(tmp_path / "other"), *STAGE1,
                    "--init_from", str(first), "--set", "model.connector=prefix"])
    with pytest.raises(ConfigError, match="give one of them"):
        entry.main(["--config", config, "--init_from", str(first), "--checkpoint", str(first)])
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder"):
        entry.main(["--config", config, "--init_from", str(tmp_path)])


def test_init_from_refuses_a_bridge_tensor_of_another_shape_and_keeps_what_the_file_lacks(stage1, tmp_path):
    # the same strict comparison as --checkpoint (load_trainable_weights), over the file's bridge tensors only
    import shutil

    from safetensors.torch import save_file

    from epalm.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_bridge_weights, read_checkpoint_config
    from epalm.models.factory import build_model

    _, first = stage1
    source = first / "checkpoints" / "last" / "trainable"
    model, _ = build_model(read_checkpoint_config(source))
    state = _weights(first)
    key = next(k for k in state if k.startswith("connectors.image.mlp.") and k.endswith("bias"))
    bent = tmp_path / "bent"
    bent.mkdir()
    shutil.copyfile(source / CONFIG_FILE, bent / CONFIG_FILE)
    save_file({**state, key: torch.zeros(state[key].numel() + 1)}, str(bent / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=rf"its bridge does not fit the configured model \(set the model keys .*\n"
                                         rf"  {key}: expected \({state[key].numel()},\), found \({state[key].numel() + 1},\)"):
        load_bridge_weights(model, bent)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    shutil.copyfile(source / CONFIG_FILE, fewer / CONFIG_FILE)
    save_file({k: v for k, v in state.items() if k != key}, str(fewer / WEIGHTS_FILE))
    loaded = load_bridge_weights(model, fewer)
    assert key in loaded.fresh and key not in loaded.loaded
