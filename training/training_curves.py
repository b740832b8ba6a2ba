"""The loss and validation curves of a run, as a PNG beside its log."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from epalm.common.atomic_io import atomic_path  # noqa: E402


def plot_training_curves(log_path: Path, out_path: Path) -> None:
    if not log_path.is_file():
        return
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    metrics = [(r["step"], r["val_metric"]) for r in records if "val_metric" in r]
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(10 if metrics else 5, 3.5), squeeze=False)
    if losses:
        axes[0][0].plot(*zip(*losses))
    axes[0][0].set(xlabel="optimizer step", ylabel="training loss", title="loss")
    if metrics:
        axes[0][1].plot(*zip(*metrics), marker="o")
        axes[0][1].set(xlabel="optimizer step", ylabel="validation metric", title="validation")
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
