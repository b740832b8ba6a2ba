"""FSDP for eP-ALM: one unit per component, so that every flat parameter has one dtype and one requires_grad.

FSDP (version 1) flattens the parameters of each wrapped unit into one FlatParameter, which must hold a single
dtype. The recipe keeps the frozen LM and encoder in fp16/bf16 and the trainable connector and prompt in fp32, so
a size-based policy (everything small in the root unit) fails with "Must flatten tensors with uniform dtype". The
units here follow the model's parts (as prismatic-vlms wraps its backbones and projector separately):

- each decoder layer of the LM alone: the LM, nearly all of the weights, is sharded layer by layer;
- each frozen encoder;
- each connector and the soft prompt (trainable, fp32), each alone.

The LM's remaining weights (input embeddings, learned positions, final norm, output head: one or two vocabulary
tables, ~1 GB for a 70B LM) are left out of FSDP and replicated on every process. As their own unit they would
break three ways: `generate` calls the LM's inner module and so skips that unit's FSDP wrapper (its weights would
stay sharded), a tied head must share its embeddings' unit, and on one process (NO_SHARD) torch 2.14 leaves a
frozen unit whose inputs need no gradient but whose output does with plain-tensor views of its weights after a
backward (they leave named_parameters(), and the next state_dict() fails). With a soft prompt (or an input-prefix
connector) every decoder layer's input needs a gradient; with layer injection and no prompt, the first layer the
visual token enters has that defect, so that combination is refused on one process (where FSDP shards nothing).
The EPALM root owns no parameter. Checkpoints hold only the trainable tensors (state-dict hooks, below).
`MixedPrecision` casts every unit to the compute dtype for forward and backward (a no-op for the frozen
half-precision ones), reduces gradients in fp32, and the trainable units cast their floating inputs to the compute
dtype. `main.py` installs all this on accelerate's FSDP plugin (`use_epalm_units`) before the model is prepared.
"""
from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch import nn

from epalm.common.errors import ConfigError, DataFormatError, LaunchError
from epalm.models.epalm import EPALM

COMPUTE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
WRAPPED_PREFIX = "_fsdp_wrapped_module."


def frozen_units(model: EPALM) -> list[nn.Module]:
    return list(model.lm.layers) + list(model.encoders.values())


def replicated_lm_modules(model: EPALM) -> list[nn.Module]:
    """The LM's modules holding weights outside its decoder layers (embeddings, positions, final norm, head)."""
    layers = {id(layer) for layer in model.lm.layers}
    found, stack = [], [model.lm.model]
    while stack:
        module = stack.pop()
        if id(module) in layers:
            continue
        if any(True for _ in module.parameters(recurse=False)):
            found.append(module)
        else:
            stack.extend(module.children())
    return found


def trainable_units(model: EPALM) -> list[nn.Module]:
    return [m for m in (*model.connectors.values(), model.prompt_module) if m is not None]


def unit_parameters(model: EPALM) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The parameters each unit will own (a parameter belongs to its innermost unit; "" is the root); the
    replicated LM weights are left out."""
    units = {id(m) for m in frozen_units(model) + trainable_units(model)}
    replicated = {id(p) for m in replicated_lm_modules(model) for p in m.parameters()}
    owner_of: dict[str, str] = {}
    for name, module in model.named_modules():
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        owner_of[name] = name if id(module) in units else owner_of.get(parent, "")
    owned: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if id(param) not in replicated:
            owned.setdefault(owner_of[name.rsplit(".", 1)[0]], []).append((name, param))
    return owned


def check_uniform_units(model: EPALM) -> None:
    """FSDP's own error names neither the unit nor the config; this one does."""
    for unit, params in unit_parameters(model).items():
        dtypes = sorted({str(p.dtype) for _, p in params})
        if len(dtypes) > 1:
            raise ConfigError(
                f"FSDP unit '{unit or 'the model root'}' would flatten weights of several dtypes {dtypes}; every unit "
                "must have one dtype (model.lm.dtype / model.encoders.<m>.dtype hold whole components)"
            )


def mixed_precision(precision: str, trainable: bool):
    """Compute in the mixed-precision dtype, reduce gradients in fp32; None (no casts) in fp32 runs."""
    from torch.distributed.fsdp import MixedPrecision

    dtype = COMPUTE_DTYPES.get(precision)
    if dtype is None:
        return None
    # The trainable units keep fp32 weights but are fed tensors cast by our code to their stored dtype.
    return MixedPrecision(param_dtype=dtype, reduce_dtype=torch.float32, cast_forward_inputs=trainable)


def auto_wrap_policy(model: EPALM, precision: str):
    from torch.distributed.fsdp.wrap import CustomPolicy

    frozen = {id(m) for m in frozen_units(model)}
    trainable = {id(m) for m in trainable_units(model)}
    trainable_precision = mixed_precision(precision, trainable=True)

    def unit(module: nn.Module) -> bool | dict:
        if id(module) in trainable:
            return {"mixed_precision": trainable_precision} if trainable_precision is not None else True
        return id(module) in frozen

    return CustomPolicy(unit)


def fsdp_settings(model: EPALM, precision: str) -> dict:
    """Prepare the model for FSDP (trainable-only state dict) and return what FullyShardedDataParallel(model, ...)
    needs beyond sharding and devices. Used for accelerate's plugin and by the tests."""
    check_uniform_units(model)
    keep_only_trainable_in_state_dict(model)
    return {"auto_wrap_policy": auto_wrap_policy(model, precision), "ignored_modules": replicated_lm_modules(model),
            "mixed_precision": mixed_precision(precision, trainable=False), "use_orig_params": True}


def use_epalm_units(accelerator, model: EPALM) -> None:
    """Under accelerate's FSDP: shard by the units above (whatever policy the accelerate config names)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return
    if accelerator.num_processes == 1 and model.prompt_module is None and model.placement is not None \
            and model.placement.needs_plan:
        raise LaunchError("FSDP on one process shards nothing, and without a soft prompt torch's NO_SHARD mode "
                          "loses the first injection layer's weights from the state dict: launch without an FSDP "
                          "config (or on several GPUs)")
    lm_training = model.lm.finetuning
    if lm_training != "frozen":
        raise LaunchError(f"FSDP wraps each decoder layer as one unit of one dtype, and model.lm.train={lm_training} "
                          "puts trainable float32 weights inside the frozen half-precision layers: train the LM "
                          "under DDP or DeepSpeed (configs/accelerate/deepspeed_zero2.yaml, _zero3.yaml)")
    if accelerator.is_fsdp2:
        raise LaunchError("fsdp_version 2 is not supported (accelerate applies no custom wrapping policy to it): "
                          "use fsdp_version: 1 as in configs/accelerate/fsdp.yaml (docs/training.md says why)")
    plugin = accelerator.state.fsdp_plugin
    settings = fsdp_settings(model, accelerator.mixed_precision)
    plugin.auto_wrap_policy = settings["auto_wrap_policy"]
    plugin.ignored_modules = settings["ignored_modules"]
    plugin.mixed_precision_policy = settings["mixed_precision"]
    plugin.use_orig_params = True  # the optimizer is built on the model's own parameters before wrapping
    for module in settings["ignored_modules"]:
        module.to(accelerator.device)  # FSDP places what it shards; the replicated weights are ours to place


def initialise_root(model: nn.Module) -> None:
    """FSDP sets itself up (which unit is the root) at the first forward through the root. Evaluation-only runs
    call the encoder, the connector and the LM's layers through their own units first, each of which would then
    take itself for a root and keep its weights whole after its forward: entering the root's (empty)
    summon_full_params sets the root up instead."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if is_fsdp(model):
        with FullyShardedDataParallel.summon_full_params(model, recurse=False, writeback=False):
            pass


# --- reading and writing the trainable weights of a wrapped model -------------------------------------------
def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(model, FullyShardedDataParallel)


def _own_trainable(unit: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name inside the unit, parameter) of the trainable parameters this unit holds, not its nested units'."""
    nested = [name for name, m in unit.module.named_modules() if name and is_fsdp(m)]
    for name, param in unit.module.named_parameters():
        if param.requires_grad and not any(name.startswith(prefix + ".") for prefix in nested):
            yield name, param


def _trainable_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from torch.distributed.fsdp import FullyShardedDataParallel

    units = []
    for name, module in model.named_modules():
        if isinstance(module, FullyShardedDataParallel) and any(True for _ in _own_trainable(module)):
            units.append((name.replace(WRAPPED_PREFIX, ""), module))
    return units


def _full_name(unit_name: str, param_name: str) -> str:
    return ".".join(part for part in (unit_name, param_name.replace(WRAPPED_PREFIX, "")) if part)


def gathered_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors whole on every process, gathering one unit at a time (never the frozen LM)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    state = {}
    for unit_name, unit in _trainable_units(model):
        with FullyShardedDataParallel.summon_full_params(unit, recurse=False, writeback=False):
            for name, param in _own_trainable(unit):
                state[_full_name(unit_name, name)] = param.detach().clone()
    return state


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "the state") -> None:
    """Write whole trainable tensors into their shards (every process passes the same `state`)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    units = _trainable_units(model)
    names = {_full_name(unit_name, name) for unit_name, unit in units for name, _ in _own_trainable(unit)}
    if set(state) != names:
        raise DataFormatError(f"{source} holds {sorted(state)}, but the model trains {sorted(names)}")
    for unit_name, unit in units:
        with FullyShardedDataParallel.summon_full_params(unit, recurse=False, writeback=True), torch.no_grad():
            for name, param in _own_trainable(unit):
                param.copy_(state[_full_name(unit_name, name)])


# --- trainable-only checkpoints through accelerate's save_state / load_state ---------------------------------
class _AbsentFrozenWeights(logging.Filter):
    """FSDP logs one warning per weight absent from a state dict it loads; absent frozen weights are expected."""

    def __init__(self, frozen: set[str]):
        super().__init__()
        self.frozen = frozen

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Did not find param with FQN"):
            return True
        name = message.split()[6].rstrip(",").replace(WRAPPED_PREFIX, "")
        return name not in self.frozen


def keep_only_trainable_in_state_dict(model: EPALM) -> None:
    """accelerate's save_state / load_state write and read `model.state_dict()` of an FSDP model whole. With these
    hooks (installed before wrapping) that state holds only the trainable tensors: checkpoints/last/ holds no frozen
    weight. When loading, FSDP skips the absent frozen weights, which keep the values the model was built with."""
    names = {name: p.requires_grad for name, p in model.named_parameters(remove_duplicate=False)}
    trainable = {name for name, grad in names.items() if grad}

    def keep_trainable(_module, state_dict, prefix, _metadata):
        for key in [k for k in state_dict if k[len(prefix):].replace(WRAPPED_PREFIX, "") not in trainable]:
            del state_dict[key]

    def frozen_not_missing(_module, incompatible_keys):
        incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys
                                             if k.replace(WRAPPED_PREFIX, "") in trainable]

    model.register_state_dict_post_hook(keep_trainable)
    model.register_load_state_dict_post_hook(frozen_not_missing)
    logging.getLogger("torch.distributed.fsdp._state_dict_utils").addFilter(
        _AbsentFrozenWeights(set(names) - trainable))
