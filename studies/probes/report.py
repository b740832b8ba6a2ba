"""The projection probes' results as files: `probes.json`, `probes.md` (a table) and `probes.png` (a bar plot),
each written under a temporary name and renamed (common/atomic_io.py)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from epalm.common.atomic_io import atomic_path, write_text_atomic

JSON_FILE, MARKDOWN_FILE, PLOT_FILE = "probes.json", "probes.md", "probes.png"
REPRESENTATIONS = {  # key in a row -> what the table and the plot call it
    "before": "before (encoder)",
    "after_trained": "after (trained connector)",
    "after_untrained": "after (untrained connector)",
}


@dataclass
class ProbeRow:
    """Held-out probe accuracies (fractions) for one attribute."""

    attribute: str
    values: list[str]  # the classes, in label-index order
    items: int  # media items with a label
    chance: float  # 1 / number of classes
    majority: float  # always answering the training folds' most frequent value
    before: float
    after_trained: float
    after_untrained: float


def markdown_table(rows: list[ProbeRow]) -> str:
    lines = ["| attribute | classes | items | chance | majority | " + " | ".join(REPRESENTATIONS.values()) + " |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row.attribute, str(len(row.values)), str(row.items)]
        cells += [f"{100 * value:.1f}" for value in (row.chance, row.majority, row.before, row.after_trained,
                                                     row.after_untrained)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any], rows: list[ProbeRow]) -> str:
    budget = report["budget"]
    shapes = report["shapes"]
    lines = [
        f"# Projection probes: {report['checkpoint']}",
        "",
        (f"Split `{report['split']}` of `{report['task']}` ({report['modality']}, {report['items']} media items, "
         f"labels from {report['label_source']}); connector `{report['connector']}` (placement "
         f"`{report['placement']}`)."),
        f"Probed representations (flattened): before {shapes['before']}, after {shapes['after']} per item.",
        (f"Probe: MLP (Linear, ReLU, Linear) of width {budget['width']}, {budget['steps']} full-batch AdamW steps, "
         f"lr {budget['lr']}, weight decay {budget['weight_decay']}, {budget['folds']}-fold stratified "
         f"cross-validation, seed {budget['seed']}. Held-out accuracy in %."),
        "",
        markdown_table(rows),
    ]
    if report["dropped"]:
        lines += ["", "Not probed:"] + [f"- `{name}`: {why}" for name, why in sorted(report["dropped"].items())]
    if report["unreadable"]:
        lines += ["", f"{report['unreadable']} media item(s) could not be decoded and were left out."]
    return "\n".join(lines) + "\n"


def plot_rows(rows: list[ProbeRow], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(rows))
    width = 0.26
    figure, axes = plt.subplots(figsize=(max(6.5, 1.6 * len(rows) + 1.5), 3.8))
    for offset, (key, label) in zip((-width, 0.0, width), REPRESENTATIONS.items()):
        axes.bar(x + offset, [100 * getattr(row, key) for row in rows], width, label=label)
    for position, row in zip(x, rows):  # the majority rate of each attribute as a dashed line across its bars
        axes.hlines(100 * row.majority, position - 1.5 * width, position + 1.5 * width, colors="black",
                    linestyles="dashed", linewidth=1, label="majority" if position == 0 else None)
    axes.set_xticks(x, [row.attribute for row in rows])
    axes.set_ylim(0, 105)
    axes.set_ylabel("held-out probe accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, frameon=False)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)


def write_report(out: Path, report: dict[str, Any], rows: list[ProbeRow]) -> dict[str, Path]:
    """Write the three files into `out`; returns their paths."""
    paths = {"json": out / JSON_FILE, "markdown": out / MARKDOWN_FILE, "plot": out / PLOT_FILE}
    write_text_atomic(paths["json"], json.dumps({**report, "rows": [asdict(row) for row in rows]}, indent=2))
    write_text_atomic(paths["markdown"], markdown_report(report, rows))
    plot_rows(rows, f"{report['task']} {report['split']}: {report['connector']} connector", paths["plot"])
    return paths
