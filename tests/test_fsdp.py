"""FSDP with the real recipe on the CPU: frozen LM and encoder in fp16/bf16, connector and prompt in fp32.

accelerate applies FSDP on GPUs only, so torch's FSDP 1 is driven directly (gloo, 1 or 2 processes under
torchrun: tests/fsdp_worker.py) with the units and mixed precision that training/fsdp_units.py gives accelerate's
plugin, and accelerate's own FSDP checkpoint functions. The accelerate wiring is checked on its plugin object.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from epalm.common.errors import ConfigError, LaunchError
from tests.tiny_models import tiny_model
from epalm.training.fsdp_units import check_uniform_units, unit_parameters, use_epalm_units

REPO = Path(__file__).resolve().parent.parent
TRAINABLE = ["connectors.image.0.bias", "connectors.image.0.weight", "connectors.image.1.bias",
             "connectors.image.1.weight", "prompt_module.prefix_embedding.0.weight"]
FROZEN_UNITS = ["OPTDecoderLayer"] * 4 + ["TimmViTEncoder"]


def _fsdp_run(tmp_path: Path, processes: int, *args: str) -> dict:
    out = tmp_path / "facts.json"
    command = ["torchrun", "--standalone", "--nproc_per_node", str(processes), "-m", "tests.fsdp_worker", str(out),
               *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("precision, processes", [("fp16", 2), ("bf16", 1)])
def test_units_keep_trainable_fp32_and_frozen_half_and_train_like_no_fsdp(tmp_path, precision, processes):
    facts = _fsdp_run(tmp_path, processes, precision)
    half = {"fp16": "torch.float16", "bf16": "torch.bfloat16"}[precision]
    layout = facts["layout"]
    # one FlatParameter per unit, each with one dtype and one requires_grad; the EPALM root owns none, the LM's
    # embeddings, final norm and head are replicated
    assert sorted(row["unit"] for row in layout) == sorted(FROZEN_UNITS + ["LinearConnection", "SoftPrompt"])
    for row in layout:
        trainable = row["unit"] in ("LinearConnection", "SoftPrompt")
        assert (row["dtype"], row["requires_grad"]) == (("torch.float32", True) if trainable else (half, False)), row
    assert facts["world_size"] == processes
    # two steps (fp16: with the sharded gradient scaler) change exactly the trainable weights, as without FSDP
    assert facts["trainable"] == TRAINABLE and facts["changed"] == TRAINABLE
    assert facts["same_names"]
    assert facts["loss"] == pytest.approx(facts["reference_loss"], abs=1e-6)
    assert facts["max_update"] > 1e-3 and facts["max_diff_to_reference"] < 1e-6
    assert facts["generated"] == facts["reference_generated"] == facts["evaluation_only_generated"]
    # accelerate's sharded checkpoint (DCP) holds the trainable tensors only; they and AdamW's moments load back
    assert facts["saved_keys"] == [f"model.{name}" for name in TRAINABLE]
    assert facts["zeroed"] and facts["restored"] and facts["optimizer_restored"]


def test_size_based_policy_of_the_old_config_cannot_flatten_mixed_dtypes(tmp_path):
    """What `configs/accelerate/fsdp.yaml` (SIZE_BASED_WRAP) did on the H200 under fp16."""
    facts = _fsdp_run(tmp_path, 1, "bf16", "size_policy")
    assert "Must flatten tensors with uniform dtype" in facts["wrap_error"]


def _accelerator(plugin, fsdp2: bool = False, processes: int = 2):
    return SimpleNamespace(distributed_type=DistributedType.FSDP, is_fsdp2=fsdp2, mixed_precision="fp16",
                           num_processes=processes, device=torch.device("cpu"), state=SimpleNamespace(fsdp_plugin=plugin))


def test_accelerate_plugin_gets_the_units_and_the_mixed_precision():
    from torch.distributed.fsdp.wrap import CustomPolicy

    model = tiny_model("opt")
    model.lm.half()
    model.encoder_for().half()
    plugin = FullyShardedDataParallelPlugin(fsdp_version=1, auto_wrap_policy="SIZE_BASED_WRAP",
                                            min_num_params=1_000_000, sync_module_states=False)
    use_epalm_units(_accelerator(plugin), model)
    plugin.set_auto_wrap_policy(model)  # what accelerate.prepare calls: our policy must survive it
    assert isinstance(plugin.auto_wrap_policy, CustomPolicy) and plugin.use_orig_params
    policy = plugin.mixed_precision_policy
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.float16, torch.float32)
    assert "" not in unit_parameters(model)  # nothing left in the root unit
    replicated = {id(m) for m in plugin.ignored_modules}
    lm = model.lm.model
    assert replicated == {id(lm.model.decoder.embed_tokens), id(lm.model.decoder.embed_positions),
                          id(lm.model.decoder.project_in), id(lm.model.decoder.project_out),
                          id(lm.model.decoder.final_layer_norm), id(lm.lm_head)}
    with pytest.raises(LaunchError, match="fsdp_version 2"):
        use_epalm_units(_accelerator(plugin, fsdp2=True), model)
    with pytest.raises(LaunchError, match="without a soft prompt"):  # torch's NO_SHARD defect, see fsdp_units
        use_epalm_units(_accelerator(plugin, processes=1), tiny_model("opt", prompt_tuning=False))


def test_a_unit_of_mixed_dtypes_is_refused_naming_it():
    model = tiny_model("opt")
    model.lm.half()
    model.lm.layers[1].fc1.float()
    with pytest.raises(ConfigError, match=r"lm\.model\.model\.decoder\.layers\.1"):
        check_uniform_units(model)
