"""Projection probes (studies/probes/command.py): the probe itself on a case whose answer is known, the labels read
from QA and caption splits, and the command end to end on a tiny trained checkpoint."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from epalm.common.command_line import run_command
from epalm.common.errors import DataFormatError
from epalm.dataset.records import Sample
from epalm.dataset.tasks.task_split import TaskSplit
from epalm.studies.probes import command as probes
from epalm.studies.probes.classifier import ProbeBudget, cross_validated_accuracy, majority_accuracy, stratified_folds
from epalm.studies.probes.labels import media_labels
import epalm.training.run as entry
from tests.tiny_run import build_tiny_setup, tiny_config

BUDGET = ProbeBudget(steps=60, width=32, folds=4, seed=0)


def _informative_features(n: int = 240, classes: int = 4, dim: int = 24, seed: int = 0):
    """Labels and features that encode them (a class centre per label, plus noise as large as the spread)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=generator) * 2
    features = centres[labels] + torch.randn(n, dim, generator=generator)
    return features, labels


def test_probe_reads_a_label_the_features_encode_and_not_one_they_do_not():
    features, labels = _informative_features()
    shuffled = features[torch.randperm(len(features), generator=torch.Generator().manual_seed(1))]
    informative = cross_validated_accuracy(features, labels, BUDGET)
    control = cross_validated_accuracy(shuffled, labels, BUDGET)
    assert informative.accuracy > 0.9
    assert abs(control.accuracy - 0.25) < 0.12  # chance: 4 balanced classes
    assert informative.accuracy > control.accuracy + 0.5
    assert len(informative.fold_accuracies) == BUDGET.folds
    assert majority_accuracy(labels, BUDGET) <= 0.26
    # Same seed, same folds, same probes: the score is reproducible.
    assert cross_validated_accuracy(features, labels, BUDGET).accuracy == informative.accuracy


def test_folds_are_stratified_and_seeded():
    labels = torch.tensor([0] * 12 + [1] * 8 + [2] * 4)
    fold = stratified_folds(labels, 4, seed=3)
    for k in range(4):
        assert torch.bincount(labels[fold == k], minlength=3).tolist() == [3, 2, 1]
    assert torch.equal(fold, stratified_folds(labels, 4, seed=3))
    assert not torch.equal(fold, stratified_folds(labels, 4, seed=4))


def _split(samples: list[Sample], kind: str = "qa") -> TaskSplit:
    return TaskSplit(task="t", split="s", kind=kind, modality="image", media_root=Path("."),
                     annotation_file=Path("ann.json"), samples=samples)


def test_labels_from_questions_deduplicate_media_and_drop_question_types_that_are_not_attributes():
    def qa(media, qtype, answer):
        return Sample(uid=f"{media}{qtype}{answer}", media=media, prompt="?", targets=[answer],
                      meta={"question_type": qtype})

    samples = [qa("a.jpg", "colour", "red"), qa("a.jpg", "exist", "yes"), qa("a.jpg", "exist", "no"),
               qa("b.jpg", "colour", "blue"), qa("b.jpg", "shape", "circle"), qa("c.jpg", "colour", "red"),
               qa("c.jpg", "shape", "square"), qa("d.jpg", "colour", "blue"), qa("d.jpg", "shape", "circle"),
               qa("e.jpg", "shape", "square")]
    labels = media_labels(_split(samples))
    assert labels.source == "questions"
    assert labels.media == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    assert labels.labels == {"colour": {"a.jpg": "red", "b.jpg": "blue", "c.jpg": "red", "d.jpg": "blue"},
                             "shape": {"b.jpg": "circle", "c.jpg": "square", "d.jpg": "circle", "e.jpg": "square"}}
    assert "answers differ" in labels.dropped["exist"]
    assert list(media_labels(_split(samples), ["shape"]).labels) == ["shape"]
    with pytest.raises(DataFormatError, match="count"):
        media_labels(_split(samples), ["count"])


def test_labels_from_caption_attributes_and_a_value_too_rare_to_hold_out():
    samples = [Sample(uid=i, media=f"{i}.wav", prompt="", targets=["x"],
                      meta={"attributes": {"pitch": "low" if i % 2 else "high", "timbre": "pure" if i else "buzzy"}})
               for i in range(6)]
    labels = media_labels(_split(samples, "caption"))
    assert labels.source == "attributes" and list(labels.labels) == ["pitch"]
    assert "'buzzy' labels 1 item" in labels.dropped["timbre"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny model trained 2 steps on the synthetic image captions (which carry every image's attributes), not
    evaluated (no val or test split)."""
    root = tmp_path_factory.mktemp("probes")
    setup = build_tiny_setup(root)
    config = tiny_config(setup, root / "c.yaml", task="caption", max_steps=2)
    run = root / "run"
    entry.main(["--config", str(config), "--output_dir", str(run), "--set", "task.val_split=",
                "--set", "task.test_split="])
    return run


def test_command_writes_table_json_and_plot_for_a_tiny_checkpoint(tiny_run, tmp_path):
    out = tmp_path / "probes"
    result = probes.main(["--checkpoint", str(tiny_run), "--split", "train", "--out", str(out),
                          "--steps", "40", "--width", "16", "--folds", "3"])
    assert result["checkpoint"] == str(tiny_run / "checkpoints" / "last" / "trainable")  # found in the run folder
    assert result["items"] == 48 and result["label_source"] == "attributes"
    assert result["shapes"] == {"before": [2, 48], "after": [2, 32]}  # K=2 x ViT width 48 -> K x OPT width 32
    report = json.loads((out / "probes.json").read_text())
    rows = {row["attribute"]: row for row in report["rows"]}
    assert set(rows) == {"colour", "count", "shape", "side"}
    for row in rows.values():
        assert row["items"] == 48 and row["chance"] == pytest.approx(1 / len(row["values"]))
        for key in ("majority", "before", "after_trained", "after_untrained"):
            assert 0.0 <= row[key] <= 1.0
    table = (out / "probes.md").read_text()
    assert "| side | 2 | 48 | 50.0 |" in table and "after (untrained connector)" in table
    assert (out / "probes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    # The same weights named as a checkpoint folder with the run's config give the same table.
    again = probes.main(["--checkpoint", str(tiny_run / "checkpoints" / "last" / "trainable"), "--config",
                         str(tiny_run / "config.yaml"), "--split", "train", "--out", str(tmp_path / "again"),
                         "--steps", "40", "--width", "16", "--folds", "3"])
    assert [asdict(row) for row in again["rows"]] == report["rows"]


def test_user_errors_are_one_line(tiny_run, tmp_path, capsys):
    def error_lines(argv: list[str]) -> list[str]:
        assert run_command(probes.main, [*argv, "--out", str(tmp_path / "out")]) == 2
        return capsys.readouterr().err.strip().splitlines()

    assert error_lines(["--checkpoint", str(tmp_path / "nowhere")]) == [
        f"error: --checkpoint {tmp_path / 'nowhere'}: no such file or folder"]
    bad_split = error_lines(["--checkpoint", str(tiny_run), "--split", "nosuch"])
    assert len(bad_split) == 1 and bad_split[0].startswith("error: ") and "nosuch" in bad_split[0]
    # A checkpoint folder outside its run has no config.yaml above it: the task must be named.
    alone = tmp_path / "alone"
    shutil.copytree(tiny_run / "checkpoints" / "last" / "trainable", alone)
    no_task = error_lines(["--checkpoint", str(alone)])
    assert len(no_task) == 1 and "--config" in no_task[0]
    assert not (tmp_path / "out").exists()
