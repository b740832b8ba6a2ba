"""One process of the CPU FSDP test (run by tests/test_fsdp.py under torchrun, gloo, 1 or 2 processes).

    torchrun --nproc_per_node 2 -m tests.fsdp_worker OUT.json bf16|fp16|fp32 [size_policy]

Builds a tiny eP-ALM with the frozen LM and encoder held in the half-precision dtype and wraps it with torch's
FSDP 1 exactly as training/fsdp_units.py configures accelerate's plugin (or with accelerate's old size-based
policy, to show its failure). Then two training steps, trainable-only checkpoint through accelerate's own FSDP
save/load functions, and a generation; everything is compared with the same model trained without FSDP.
Rank 0 writes the facts to OUT.json; the test asserts on them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import tempfile
import traceback
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import ShardingStrategy
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

from tests.tiny_models import TINY_VIT, images, text_batch, tiny_lm_config, tiny_model
from epalm.training.fsdp_units import (
    fsdp_settings,
    gathered_trainable_state,
    initialise_root,
    load_trainable_state,
)
from epalm.training.loss import training_loss

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def build(precision: str):
    half = DTYPES[precision]
    return tiny_model("opt", seed=0, lm=dataclasses.replace(tiny_lm_config("opt"), dtype=half),
                      encoders={"image": dataclasses.replace(TINY_VIT, dtype=half)})


def autocast(precision: str):
    """accelerate's autocast for fp16/bf16; none in fp32."""
    return torch.autocast("cpu", dtype=getattr(torch, DTYPES[precision]), enabled=precision != "fp32")


def train_steps(model, precision: str, parameters, steps: int = 2):
    """AdamW steps under autocast with loss scaling (fp16), as accelerate runs them; two, because with a unit of
    the wrong kind FSDP 1 on one process fails at the second (training/fsdp_units.py says which)."""
    optimizer = torch.optim.AdamW(parameters, lr=1e-2)
    scaler = ShardedGradScaler(device="cpu", enabled=precision == "fp16", init_scale=1024.0)
    ids, mask = text_batch()
    for _ in range(steps):
        with autocast(precision):
            loss = training_loss(model, ids, mask, ids.clone(), media=images())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    return loss.item(), optimizer


def unit_layout(fsdp_model) -> list[dict]:
    rows = []
    for unit in FSDP.fsdp_modules(fsdp_model):
        if unit._has_params:  # the unit's FlatParameter (what accelerate reads to upcast trainable half weights)
            flat = unit._flat_param
            rows.append({"unit": type(unit.module).__name__, "dtype": str(flat.dtype),
                         "requires_grad": flat.requires_grad, "numel": flat.numel()})
    return rows


def full_state(fsdp_model) -> dict[str, torch.Tensor]:
    with FSDP.summon_full_params(fsdp_model, writeback=False):
        return {n.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for n, p in fsdp_model.named_parameters()}


def checkpoint_round_trip(fsdp_model, optimizer, trained: dict[str, torch.Tensor]) -> dict:
    """accelerate's own save_fsdp_model / load_fsdp_model (SHARDED_STATE_DICT, DCP), as save_state calls them."""
    import torch.distributed.checkpoint as dist_cp
    from accelerate import PartialState
    from accelerate.utils import (FullyShardedDataParallelPlugin, load_fsdp_model, load_fsdp_optimizer,
                                  save_fsdp_model, save_fsdp_optimizer)

    PartialState(cpu=True)  # accelerate's logging needs its state; it adopts the gloo group started here
    plugin = FullyShardedDataParallelPlugin(state_dict_type="SHARDED_STATE_DICT", sync_module_states=False)
    plugin.set_state_dict_type()
    acc = SimpleNamespace(process_index=dist.get_rank(), num_processes=dist.get_world_size(), is_fsdp2=False,
                          is_main_process=dist.get_rank() == 0, wait_for_everyone=dist.barrier)
    folder = [tempfile.mkdtemp() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(folder)
    save_fsdp_model(plugin, acc, fsdp_model, folder[0])
    save_fsdp_optimizer(plugin, acc, optimizer, fsdp_model, folder[0])
    moments = [state["exp_avg"].clone() for state in optimizer.state.values()]
    dist.barrier()
    saved = sorted(dist_cp.FileSystemReader(os.path.join(folder[0], "pytorch_model_fsdp_0")).read_metadata()
                   .state_dict_metadata)
    load_trainable_state(fsdp_model, {k: torch.zeros_like(v) for k, v in trained.items()})
    zeroed = gathered_trainable_state(fsdp_model)
    for state in optimizer.state.values():
        state["exp_avg"].zero_()
    load_fsdp_model(plugin, acc, fsdp_model, folder[0])
    load_fsdp_optimizer(plugin, acc, optimizer, fsdp_model, folder[0])
    restored = gathered_trainable_state(fsdp_model)
    return {"saved_keys": saved,
            "zeroed": all(not v.any() for v in zeroed.values()),
            "restored": all(torch.equal(restored[k], trained[k]) for k in trained),
            "optimizer_restored": bool(moments) and all(
                torch.equal(state["exp_avg"], moment) for state, moment in zip(optimizer.state.values(), moments))}


def main(out: str, precision: str, policy: str = "units") -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = build(precision)
    if policy == "size_policy":  # accelerate's SIZE_BASED_WRAP of configs/accelerate/fsdp.yaml before
        from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

        kwargs = {"auto_wrap_policy": functools.partial(size_based_auto_wrap_policy, min_num_params=1_000_000),
                  "use_orig_params": True}
    else:  # what training/fsdp_units.use_epalm_units gives accelerate's plugin
        kwargs = fsdp_settings(model, precision)
    try:
        fsdp_model = FSDP(model, sharding_strategy=ShardingStrategy.FULL_SHARD, device_id=torch.device("cpu"),
                          **kwargs)
    except ValueError as error:
        if dist.get_rank() == 0:
            json.dump({"wrap_error": str(error)}, open(out, "w"))
        return
    reference = build(precision)
    before = full_state(fsdp_model)
    loss, optimizer = train_steps(fsdp_model, precision, [p for p in fsdp_model.parameters() if p.requires_grad])
    ref_loss, _ = train_steps(reference, precision, [p for p in reference.parameters() if p.requires_grad])
    after = full_state(fsdp_model)
    trained = gathered_trainable_state(fsdp_model)
    ref_trained = reference.trainable_state_dict()
    facts = {
        "world_size": dist.get_world_size(),
        "layout": unit_layout(fsdp_model),
        "loss": loss, "reference_loss": ref_loss,
        "same_names": sorted(before) == sorted(after),
        "changed": sorted(n for n in before if not torch.equal(before[n], after[n])),
        "trainable": sorted(ref_trained),
        "max_diff_to_reference": max((trained[k] - ref_trained[k]).abs().max().item() for k in ref_trained),
        "max_update": max((trained[k] - before[k]).abs().max().item() for k in ref_trained),
    }
    # generation: the reference gets the FSDP model's trained weights, both generate under the same autocast
    reference.load_state_dict(trained, strict=False)
    ids, mask = text_batch(left_pad=True)
    with autocast(precision):
        tokens = fsdp_model.module.generate(ids, mask, media=images(), max_new_tokens=5)
    with autocast(precision):
        ref_tokens = reference.generate(ids, mask, media=images(), max_new_tokens=5)
    facts["generated"], facts["reference_generated"] = tokens.tolist(), ref_tokens.tolist()
    # an evaluation-only run: a fresh wrapped model, set up at its root, given the trained weights, generates
    fresh_model = build(precision)
    fresh = FSDP(fresh_model, sharding_strategy=ShardingStrategy.FULL_SHARD, device_id=torch.device("cpu"),
                 **fsdp_settings(fresh_model, precision))
    initialise_root(fresh)
    load_trainable_state(fresh, trained)
    with autocast(precision):
        facts["evaluation_only_generated"] = fresh.module.generate(ids, mask, media=images(), max_new_tokens=5).tolist()
    facts.update(checkpoint_round_trip(fsdp_model, optimizer, trained))
    if dist.get_rank() == 0:
        json.dump(facts, open(out, "w"), indent=1)
    dist.barrier()  # no process leaves while the other still talks to it


if __name__ == "__main__":
    # Leave with os._exit, past the interpreter's teardown and without destroy_process_group: the FSDP modules
    # still hold the gloo group, and tearing it down can abort a process whose facts are already written
    # ("terminate called without an active exception", exit 134). main() ends on a barrier, so no process
    # leaves while the other still talks to it.
    status = 0
    try:
        main(*sys.argv[1:])
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
