"""Counting the aten operators of a workload, and the casts and copies among them with where each comes from
(the machinery of benchmarks/op_counts.py: its docstring says what is counted and why)."""
from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parent.parent
# Folders whose frames are the project's (the library's, installed under epalm/, and the benchmarks).
PROJECT_DIRS = ("common", "models", "dataset", "training", "inference", "demo", "studies", "benchmarks")
COPY_OPS = ("_to_copy", "copy_")
DISPATCH_FRAMES = ("torch/_dynamo/", "torch/_compile.py", "torch/_ops.py", "torch/utils/_python_dispatch.py",
                   "torch/overrides.py")
ROOT = REPO  # the tree whose frames count as the project's (the revision's tree under `op_counts --against`)


@dataclass
class OpCount:
    """One workload's counts. phase: forward, backward or optimizer."""

    ops: dict[str, int] = field(default_factory=dict)  # phase -> operators
    views: dict[str, int] = field(default_factory=dict)  # phase -> of which views (no data touched, no kernel)
    casts: dict[str, int] = field(default_factory=dict)  # phase -> dtype-changing copies
    copies: dict[str, int] = field(default_factory=dict)  # phase -> same-dtype copies
    sites: dict[str, int] = field(default_factory=dict)  # forward cast site -> count
    operators: dict[str, int] = field(default_factory=dict)  # operator name -> count (all phases)

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def total_kernels(self) -> int:
        """Operators that are not views: about the kernel launches of the step on a GPU."""
        return self.total_ops - sum(self.views.values())

    @property
    def total_casts(self) -> int:
        return sum(self.casts.values())

    @property
    def total_copies(self) -> int:
        return sum(self.copies.values())


def _folded(path: str) -> str:
    """`lm.model.model.decoder.layers.7.fc1` -> `lm.model.model.decoder.layers.*.fc1`: one name for the same
    module of every layer."""
    parts = ["*" if part.isdigit() else part for part in path.split(".")]
    return ".".join(parts)


def _call_site() -> str:
    """`ours > theirs`: the innermost frame of this project's code on the stack (models/, training/, dataset/,
    benchmarks/; this module excluded) and, when the operator was issued deeper down, the innermost library
    frame (`torch/nn/modules/linear.py:forward` for an autocast cast in a Linear)."""
    ours = theirs = None
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename).resolve()
        if path.name in ("op_counts.py", "op_counter.py") or any(part in path.as_posix() for part in DISPATCH_FRAMES):
            continue
        try:
            relative = path.relative_to(ROOT)
        except ValueError:
            relative = None
        if relative is not None and relative.parts[:1] == ("epalm",):  # a revision's library, extracted under epalm/
            relative = Path(*relative.parts[1:])
        if relative is not None and relative.parts and relative.parts[0] in PROJECT_DIRS:
            ours = f"{relative.as_posix()}:{frame.name}"
            break
        if theirs is None:
            parts = path.parts
            start = parts.index("site-packages") + 1 if "site-packages" in parts else max(len(parts) - 2, 0)
            theirs = f"{'/'.join(parts[start:])}:{frame.name}"
    return f"{ours or '-'}" + (f" > {theirs}" if theirs else "")



class _Counter(TorchDispatchMode):
    """Counts every operator dispatched below autograd and autocast while it is active."""

    def __init__(self):
        super().__init__()
        self.phase = "forward"
        self.count = OpCount()
        self.stack: list[str] = []  # the names of the modules now running, innermost last

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        c = self.count
        c.ops[self.phase] = c.ops.get(self.phase, 0) + 1
        c.operators[name] = c.operators.get(name, 0) + 1
        if func.is_view:
            c.views[self.phase] = c.views.get(self.phase, 0) + 1
        if name in COPY_OPS:
            source = args[1] if name == "copy_" else args[0]
            target = args[0] if name == "copy_" else out
            kind = "casts" if source.dtype != target.dtype else "copies"
            table = getattr(c, kind)
            table[self.phase] = table.get(self.phase, 0) + 1
            if kind == "casts" and self.phase == "forward":
                module = _folded(self.stack[-1]) if self.stack else "-"
                site = f"{_call_site()} [{module}] {str(source.dtype)[6:]}->{str(target.dtype)[6:]}"
                c.sites[site] = c.sites.get(site, 0) + 1
        return out


class CudaNormPolicy(TorchFunctionMode):
    """On the CPU, the one part of CUDA's autocast policy that the CPU's lacks and that matters here: under
    autocast, LayerNorm and GroupNorm cast their floating inputs (input, weight, bias) to fp32 and return fp32
    (CUDA's fp32 list; the CPU's autocast leaves norms alone). The CPU then counts the casts a GPU step makes
    around norms: these, and the casts back to half of the fp32 output by each matmul that reads it."""

    NORMS = (torch.nn.functional.layer_norm, torch.layer_norm, torch.nn.functional.group_norm, torch.group_norm)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.NORMS and torch.is_autocast_enabled("cpu"):
            def fp32(value):
                half = isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32
                return value.float() if half else value
            args, kwargs = tuple(fp32(a) for a in args), {k: fp32(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


@contextlib.contextmanager
def _module_stack(counter: _Counter, root: torch.nn.Module):
    """Keeps `counter.stack` at the names of the modules now running (global hooks see every module)."""
    names = {id(m): name or "model" for name, m in root.named_modules()}

    def push(module, args):
        counter.stack.append(names.get(id(module), type(module).__name__))

    def pop(module, args, output):
        if counter.stack:
            counter.stack.pop()

    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(push),
             torch.nn.modules.module.register_module_forward_hook(pop, always_call=True)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def count_ops(model: torch.nn.Module, forward: Callable[[], Any], backward: Callable[[Any], None] | None = None,
              optimizer_step: Callable[[], None] | None = None, cuda_norms: bool = False) -> OpCount:
    """The operators of `forward()`, then `backward(its result)`, then `optimizer_step()` (`cuda_norms`: under
    `CudaNormPolicy`)."""
    counter = _Counter()
    policy = CudaNormPolicy() if cuda_norms else contextlib.nullcontext()
    with _module_stack(counter, model), policy, counter:
        result = forward()
        if backward is not None:
            counter.phase = "backward"
            backward(result)
        if optimizer_step is not None:
            counter.phase = "optimizer"
            optimizer_step()
    return counter.count
