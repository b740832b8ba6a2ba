"""A fresh process that reloads runs from their checkpoints and evaluates them (run by tests/test_encoder_family_runs.py).

    python -m tests.reload_worker OUT.json RUN_DIR ...

For each run folder: its own config.yaml, `--evaluate --checkpoint <run>/checkpoints/last/trainable`, the encoder's
features recomputed from the media (no feature cache), on the first `max_eval_samples` of the test split. Writes
`{run_dir: {uid: prediction}}` to OUT.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import epalm.training.run as entry


def main(out: str, runs: list[str]) -> None:
    predictions = {}
    for run in map(Path, runs):
        result_dir = run.parent / f"{run.name}_reloaded"
        entry.main(["--config", str(run / "config.yaml"), "--evaluate", "--output_dir", str(result_dir),
                    "--checkpoint", str(run / "checkpoints" / "last" / "trainable"),
                    "--set", "train.feature_cache=false"])
        (predicted,) = (result_dir / "eval").glob("*test_predictions.json")
        rows = json.loads(predicted.read_text())
        predictions[str(run)] = {str(row.get("question_id", row.get("image_id"))): row.get("answer", row.get("caption"))
                                 for row in rows}
    Path(out).write_text(json.dumps(predictions))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
