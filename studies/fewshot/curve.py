"""The study's curve: each metric against k (log scale) per method, mean and standard deviation over seeds, with
the reference runs (every training pair; blind) as horizontal lines."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from epalm.common.atomic_io import atomic_path
from epalm.studies.fewshot.summary import METRICS


def plot_curve(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if summary["tables"].get(m)]
    figure, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for method, by_k in summary["tables"][metric].items():
            points = sorted((int(k), cell) for k, cell in by_k.items() if k != "all")
            if points:
                axis.errorbar([k for k, _ in points], [c["mean"] for _, c in points],
                              yerr=[c["std"] for _, c in points], marker="o", capsize=3, label=method)
            if "all" in by_k:
                axis.axhline(by_k["all"]["mean"], linestyle="--", linewidth=1,
                             color="grey" if method == "blind" else "black", label=f"{method}, every training pair")
        axis.set_xscale("log", base=2)
        axis.set_xticks(summary["shots"], [str(k) for k in summary["shots"]])
        axis.set_xlabel("k (captioned samples of the new modality)")
        axis.set_ylabel(METRICS[metric][0])
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"{summary['dataset']} ({summary['split']}): {summary['steps']} steps per run, "
                    f"seeds {summary['seeds']}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
    return path
