"""Ratios between modes, targets met or missed, the printed table and the JSON file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks.shapes import BenchShape

# ratio key -> (numerator mode, denominator mode) of median seconds: > 1 means the denominator is faster.
TIME_RATIOS = {
    "feature_cache_train_speedup": ("train_encode", "train_cached"),
    "feature_cache_pipeline_speedup": ("train_encode_pipeline", "train_cached_pipeline"),
    "kv_cache_generation_speedup": ("generate_recompute", "generate_kv_cache"),
    "epalm_over_causal_train_time": ("train_epalm", "train_encode"),
    "epalm_over_causal_generation_time": ("generate_epalm", "generate_kv_cache"),
}
# ratio key -> (reference key, our mode): the reference's seconds over ours, at the same precision only.
REFERENCE_RATIOS = {
    "train_speedup_vs_reference": ("train_step_s", "train_encode"),
    "generate_speedup_vs_reference": ("generate_s", "generate"),
}


def ratios(modes: dict[str, dict[str, Any]], shape: BenchShape, dtype: str = "float32") -> dict[str, float]:
    """Time ratios between our modes, and to the reference measured at `dtype` (ours: the run's precision)."""
    out = {}
    for key, (slow, fast) in TIME_RATIOS.items():
        if slow in modes and fast in modes:
            out[key] = modes[slow]["median_s"] / modes[fast]["median_s"]
    reference = shape.reference.get(dtype, {})
    for key, (name, mode) in REFERENCE_RATIOS.items():
        if name in reference and mode in modes:
            out[key] = reference[name] / modes[mode]["median_s"]
    return out


def reference_gaps(modes: dict[str, dict[str, Any]], shape: BenchShape, dtype: str) -> dict[str, str]:
    """Ratios to the reference left out because it has no number at this precision: key -> why."""
    if not shape.reference:
        return {}
    reference = shape.reference.get(dtype, {})
    known = ", ".join(sorted(d for d, values in shape.reference.items() if values)) or "none"
    return {key: f"the reference's {name} at {dtype} is not known (known at: {known}); not compared"
            for key, (name, mode) in REFERENCE_RATIOS.items() if mode in modes and name not in reference}


def target_value(key: str, values: dict[str, float], modes: dict[str, dict[str, Any]]) -> float | None:
    """A ratio (`key` in `values`) or one mode's field (`"mode.field"`); None when not measured."""
    if key in values:
        return values[key]
    mode, _, name = key.partition(".")
    return modes.get(mode, {}).get(name) if name else None


def target_results(values: dict[str, float], modes: dict[str, dict[str, Any]], shape: BenchShape,
                   device: str) -> list[dict[str, Any]]:
    results = []
    for t in shape.targets:
        judged = t.device is None or t.device == device
        value = target_value(t.key, values, modes) if judged else None
        results.append({"key": t.key, "description": t.description, "minimum": t.minimum, "maximum": t.maximum,
                        "bound": t.bound(), "device": t.device, "value": value,
                        "met": None if value is None else t.met_by(value)})
    return results


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(max(len(r) for r in rows))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_table(result: dict[str, Any]) -> str:
    """The modes, then the ratios and targets: two tables, each aligned on its own."""
    modes = result["modes"]
    gpu = result["machine"]["device"] == "cuda"
    header = ["mode", "median s", "cpu s", "samples/s", "tokens/s", "peak MB", "start MB"]
    header += ["TFLOP/s", "MFU"] if gpu else []
    rows = [header]
    for name, m in modes.items():
        row = [name, _number(m["median_s"]), _number(m["median_cpu_s"]), _number(m.get("samples_per_s")),
               _number(m.get("tokens_per_s")), f"{m['peak_memory_mb']:.0f}", f"{m['start_memory_mb']:.0f}"]
        if gpu:
            mfu = m.get("mfu")
            row += [_number(m.get("achieved_tflops")), "-" if mfu is None else f"{100 * mfu:.1f}%"]
        rows.append(row)
    judged = [["ratio or target", "value", "target", "met"]]
    targets = {t["key"]: t for t in result["targets"]}
    for key, value in result["ratios"].items():
        target = targets.pop(key, None)
        met = "-" if target is None else ("yes" if target["met"] else "NO")
        judged.append([key, f"{value:.2f}x", f"{target['bound']}x" if target else "-", met])
    gaps = result.get("reference_gaps", {})
    for key, target in targets.items():  # targets on one mode's field (MFU, peak memory), or a ratio left out
        value, met = target["value"], target["met"]
        why = "not measured" + (f" ({target['device']} only)" if target["device"] else "")
        if key in gaps:
            why = f"no reference at {result['machine']['dtype']}: not compared"
        judged.append([key, _number(value), target["bound"], why if met is None else "yes" if met else "NO"])
    machine = result["machine"]
    title = (f"{result['shape']['name']} on {machine['device_name']} ({machine['dtype']}, "
             f"{machine['threads']} threads, load {machine['load_before'][0]:.2f} -> {machine['load_after'][0]:.2f}), "
             f"median of {result['repeats']}")
    return "\n".join([title, *_aligned(rows), "", *_aligned(judged)])


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
