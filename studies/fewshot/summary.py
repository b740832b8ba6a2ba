"""The study's tables and the issue's goal, computed from the runs' results (mean and standard deviation over
seeds): caption attribute accuracy (%) and CIDEr per method and k, and the reference runs (every training pair;
blind)."""
from __future__ import annotations

import statistics
from typing import Any

from epalm.studies.fewshot.config import FewShotConfig

METRICS = {"attribute_accuracy": ("caption attribute accuracy (%)", 100.0), "CIDEr": ("CIDEr", 1.0)}
BASELINES = ("scratch", "pretrained_finetuned", "lora", "epalm_injection")
HYPERNETWORKS = ("hypernetwork", "hypernetwork_finetuned")
GOAL_SHOTS, SCRATCH_SHOTS = 32, 256


def _cell(values: list[float]) -> dict[str, float | int]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def aggregate(results: list[dict[str, Any]], metric: str) -> dict[str, dict[str, dict]]:
    """method -> str(k) -> {mean, std, n} of `metric` (scaled as in METRICS)."""
    scale = METRICS[metric][1]
    grouped: dict[str, dict[str, list[float]]] = {}
    for result in results:
        value = result["metrics"].get(metric)
        if value is not None:
            grouped.setdefault(result["method"], {}).setdefault(str(result["shots"]), []).append(scale * value)
    return {method: {k: _cell(v) for k, v in by_k.items()} for method, by_k in grouped.items()}


def goal(table: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """The issue's goal on one metric: a hypernetwork variant at 32 shots >= scratch at 256, and > every baseline
    at 32 (means over seeds)."""
    at = lambda method, k: table.get(method, {}).get(str(k), {}).get("mean")  # noqa: E731
    out: dict[str, Any] = {"scratch_at_256": at("scratch", SCRATCH_SHOTS),
                           "baselines_at_32": {b: at(b, GOAL_SHOTS) for b in BASELINES if at(b, GOAL_SHOTS) is not None}}
    for method in HYPERNETWORKS:
        value = at(method, GOAL_SHOTS)
        if value is None or out["scratch_at_256"] is None:
            continue
        out[method] = {"at_32": value, "at_least_scratch_at_256": value >= out["scratch_at_256"],
                       "better_than_every_baseline_at_32": all(value > b for b in out["baselines_at_32"].values())}
    return out


def markdown_table(table: dict[str, dict[str, dict]], shots: list[int], title: str, digits: int) -> str:
    lines = [f"| {title} | " + " | ".join(f"k={k}" for k in shots) + " | all pairs |",
             "|---|" + "---|" * (len(shots) + 1)]
    for method, by_k in table.items():
        cells = []
        for k in [*map(str, shots), "all"]:
            cell = by_k.get(k)
            cells.append("-" if cell is None else f"{cell['mean']:.{digits}f}" +
                         (f" ± {cell['std']:.{digits}f}" if cell["n"] > 1 else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise(cfg: FewShotConfig, results: list[dict[str, Any]], seconds: dict[str, float]) -> dict[str, Any]:
    order = [*cfg.study.methods, "blind"]
    tables = {}
    for metric in METRICS:
        table = aggregate(results, metric)
        tables[metric] = {m: table[m] for m in order if m in table}
    run_seconds = [r["seconds"]["cpu"] for r in results]
    markdown = "\n\n".join(markdown_table(tables[m], cfg.study.shots, METRICS[m][0], 1 if m != "CIDEr" else 3)
                           for m in METRICS if tables[m])
    return {
        "dataset": results[0]["dataset"] if results else None, "split": results[0]["split"] if results else None,
        "shots": cfg.study.shots, "seeds": cfg.study.seeds, "steps": cfg.study.steps,
        "batch_size": cfg.study.batch_size, "reference_steps": cfg.study.reference_steps,
        "tables": tables, "goal": {m: goal(tables[m]) for m in METRICS if tables[m]},
        "seconds": {**seconds, "run_cpu_total": round(sum(run_seconds), 1), "runs": len(results)},
        "markdown": markdown,
    }
