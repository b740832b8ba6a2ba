"""Linear probes on frozen CLS features: does a linear map (logistic regression) recover each attribute?

eP-ALM reads the CLS of the last K blocks through the final norm and maps them linearly into the LM, so the
probe asks exactly that of each of the last PROBED_BLOCKS blocks, for every pretrained encoder of the demo.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PROBED_BLOCKS = 2


def probe_accuracy(train_features: np.ndarray, train_labels: dict[str, torch.Tensor], test_features: np.ndarray,
                   test_labels: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """features: (N, PROBED_BLOCKS, d), oldest block first. Returns block ("last", "last-1") -> attribute ->
    held-out accuracy of a logistic regression fitted on that block's CLS."""
    report = {}
    for k in range(PROBED_BLOCKS):
        block = "last" if k == PROBED_BLOCKS - 1 else f"last-{PROBED_BLOCKS - 1 - k}"
        report[block] = {}
        for attribute, labels in train_labels.items():
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            probe.fit(train_features[:, k], labels.numpy())
            accuracy = probe.score(test_features[:, k], test_labels[attribute].numpy())
            report[block][attribute] = round(float(accuracy), 4)
    return report
