"""Metrics: VQA accuracy (both evaluator versions), exact match, caption metrics and the scoring CLI.

Expected numbers are worked out by hand in the comments. With 10 human answers, a prediction matching
m of them scores (m * min(1, (m-1)/3) + (10-m) * min(1, m/3)) / 10: m=1 0.3, m=2 0.6, m=3 0.9, m>=4 1.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from epalm.dataset.metrics.answer_normalization import normalize_answer, process_punctuation
from epalm.dataset.metrics.caption_metrics import caption_metrics, load_coco_references
from epalm.dataset.metrics.exact_match import exact_match_accuracy
from epalm.dataset.metrics.score import main
from epalm.dataset.metrics.vqa_accuracy import load_vqa_ground_truth, question_accuracy, vqa_accuracy
import epalm.dataset.metrics.caption_metrics as caption_module

REPO = Path(__file__).resolve().parents[1]

# Four questions on which the 2017 and 2021 evaluators agree only for q4.
GROUND_TRUTH = {
    # all identical: 2017 normalises the prediction ("two" -> "2", 10 matches, 1.0); 2021 normalises
    # nothing ("two" != "2", 0.0)
    1: {"answers": ["2"] * 10, "answer_type": "number", "question_type": "how many"},
    # 2017 leaves "the bus" alone, so "bus" matches once (0.3); 2021 drops the article: 4 matches (1.0)
    2: {"answers": ["the bus"] * 3 + ["bus"] + ["train"] * 6, "answer_type": "other", "question_type": "what"},
    # all identical: 2017 strips "Yes." to "yes" (1.0); 2021 compares "Yes." with "yes" (0.0)
    3: {"answers": ["yes"] * 10, "answer_type": "yes/no", "question_type": "is this"},
    # both: "red" matches 2 answers (0.6)
    4: {"answers": ["red", "red", "dark red"] + ["maroon"] * 7, "answer_type": "other", "question_type": "what"},
}
PREDICTIONS = [{"question_id": 1, "answer": "two"}, {"question_id": 2, "answer": "bus"},
               {"question_id": 3, "answer": "Yes."}, {"question_id": 4, "answer": "red"}]


def official_files(tmp_path: Path) -> tuple[Path, Path]:
    questions = {"questions": [{"question_id": qid, "image_id": 100 + qid, "question": f"q{qid}?"}
                               for qid in GROUND_TRUTH]}
    annotations = {"annotations": [
        {"question_id": qid, "image_id": 100 + qid, "answer_type": truth["answer_type"],
         "question_type": truth["question_type"], "multiple_choice_answer": truth["answers"][0],
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                     for i, a in enumerate(truth["answers"])]}
        for qid, truth in GROUND_TRUTH.items()]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    return tmp_path / "q.json", tmp_path / "a.json"


# ---------------------------------------------------------------- normalisation
@pytest.mark.parametrize("raw, expected", [
    ("Two dogs", "2 dogs"), ("none", "0"), ("The cat.", "cat"), ("1,000", "1000"), ("3.5", "3.5"),
    ("dont", "don't"), ("yes!", "yes"), ("a - b", "b"), ("x;y", "x y"), ("  Red\tcar\n", "red car"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_punctuation_step_only_does_not_lowercase_or_drop_articles():
    assert process_punctuation("The Bus!") == "The Bus "


# ---------------------------------------------------------------- VQA accuracy
@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_counts(matches, expected):
    answers = ["cat"] * matches + [f"other{i}" for i in range(10 - matches)]
    for version in ("2017", "2021"):
        assert question_accuracy("cat", answers, version) == pytest.approx(expected)


@pytest.mark.parametrize("version, per_question", [("2017", [1.0, 0.3, 1.0, 0.6]), ("2021", [0.0, 1.0, 0.0, 0.6])])
def test_versions_differ_per_question(version, per_question):
    scores = [question_accuracy(p["answer"], GROUND_TRUTH[p["question_id"]]["answers"], version) for p in PREDICTIONS]
    assert scores == pytest.approx(per_question)


def test_vqa_accuracy_overall_and_per_type_for_both_versions():
    old = vqa_accuracy(PREDICTIONS, GROUND_TRUTH, version="2017")
    new = vqa_accuracy(PREDICTIONS, GROUND_TRUTH)  # default: 2021
    assert (old.version, new.version) == ("2017", "2021")
    assert old.overall == pytest.approx(100 * (1.0 + 0.3 + 1.0 + 0.6) / 4)  # 72.5
    assert new.overall == pytest.approx(100 * (0.0 + 1.0 + 0.0 + 0.6) / 4)  # 40.0
    assert old.per_answer_type == pytest.approx({"number": 100.0, "other": 45.0, "yes/no": 100.0})
    assert new.per_answer_type == pytest.approx({"number": 0.0, "other": 80.0, "yes/no": 0.0})
    assert new.per_question_type == pytest.approx({"how many": 0.0, "is this": 0.0, "what": 80.0})
    assert new.per_question[2] == pytest.approx(100.0)
    assert new.to_dict()["version"] == "2021"


def test_ground_truth_is_never_mutated(tmp_path):
    questions, annotations = official_files(tmp_path)
    truth = load_vqa_ground_truth(annotations, questions)
    before = copy.deepcopy(truth)
    first = [vqa_accuracy(PREDICTIONS, truth, version=v).overall for v in ("2017", "2021")]
    second = [vqa_accuracy(PREDICTIONS, truth, version=v).overall for v in ("2017", "2021")]
    assert truth == before
    assert first == second == pytest.approx([72.5, 40.0])


def test_missing_and_unknown_predictions():
    partial = PREDICTIONS[1:]  # no prediction for question 1
    with pytest.warns(UserWarning, match="1 of 4 ground-truth ids have no prediction"):
        ignored = vqa_accuracy(partial, GROUND_TRUTH)
    assert (ignored.num_scored, ignored.num_missing, ignored.missing_ids) == (3, 1, [1])
    assert ignored.overall == pytest.approx(100 * 1.6 / 3)
    with pytest.warns(UserWarning):
        zeroed = vqa_accuracy(partial, GROUND_TRUTH, missing="zero")
    assert (zeroed.num_scored, zeroed.overall) == (4, pytest.approx(40.0))
    with pytest.raises(ValueError, match="have no prediction"):
        vqa_accuracy(partial, GROUND_TRUTH, missing="error")
    with pytest.raises(ValueError, match="absent from the ground truth.*99"):
        vqa_accuracy(PREDICTIONS + [{"question_id": 99, "answer": "x"}], GROUND_TRUTH)


def test_string_and_int_ids_match_and_bad_predictions_are_named():
    as_strings = {str(p["question_id"]): p["answer"] for p in PREDICTIONS}
    assert vqa_accuracy(as_strings, GROUND_TRUTH).overall == pytest.approx(40.0)
    with pytest.raises(ValueError, match="entry 1: missing field 'answer'"):
        vqa_accuracy([PREDICTIONS[0], {"question_id": 2}], GROUND_TRUTH)
    with pytest.raises(ValueError, match="duplicate prediction"):
        vqa_accuracy([PREDICTIONS[0], PREDICTIONS[0]], GROUND_TRUTH)
    with pytest.raises(ValueError, match="unknown VQA evaluator version"):
        vqa_accuracy(PREDICTIONS, GROUND_TRUTH, version="2019")


def test_bad_official_annotations_name_file_and_entry(tmp_path):
    _, annotations = official_files(tmp_path)
    data = json.loads(annotations.read_text())
    del data["annotations"][1]["answers"]
    annotations.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"a\.json: entry 1 \(question_id=2\): missing field 'answers'"):
        load_vqa_ground_truth(annotations)


# ---------------------------------------------------------------- exact match
def test_exact_match_normalises_and_groups():
    truth = {
        "q1": {"label": {"2": 1.0}, "question_type": "count"},        # "two" -> "2": right
        "q2": {"answer": "the red one", "question_type": "color"},   # "Red one." -> "red one": right
        "q3": {"answer": "blue", "question_type": "color"},          # wrong
        "q4": {"label": {"left": 0.5, "on the left": 1.0}},          # "left" earns 0.5 (no type)
    }
    predictions = {"q1": "two", "q2": "Red one.", "q3": "green", "q4": "left"}
    result = exact_match_accuracy(predictions, truth)
    assert result.overall == pytest.approx(100 * (1 + 1 + 0 + 0.5) / 4)
    assert result.per_question_type == pytest.approx({"color": 50.0, "count": 100.0})
    assert result.metric == "exact_match"
    with pytest.raises(ValueError, match="needs a 'label' object, an 'answer' string"):
        exact_match_accuracy({"q": "x"}, {"q": {"question_type": "t"}})


# ---------------------------------------------------------------- captions
REFERENCES = {
    1: ["a dog runs on the grass", "a brown dog running across a field", "the dog is running outside"],
    2: ["a plate of food with broccoli", "broccoli and rice on a white plate", "a meal on a plate"],
    3: ["a man riding a red bicycle", "a person on a bike in the street", "a cyclist rides down the road"],
}
PERFECT = {uid: refs[0] for uid, refs in REFERENCES.items()}
UNRELATED = {1: "a plane in the sky", 2: "two cats sleeping on a sofa", 3: "a clock on a tower"}
FAST = ("BLEU", "ROUGE_L", "CIDEr")


def test_caption_metrics_rank_perfect_above_unrelated():
    good = caption_metrics(PERFECT, REFERENCES, metrics=FAST)
    bad = caption_metrics(UNRELATED, REFERENCES, metrics=FAST)
    assert good.tokenizer == "ptb" and good.skipped == {}
    assert good.scores["CIDEr"] > 1.0 > bad.scores["CIDEr"]
    for name in ("Bleu_1", "Bleu_4", "ROUGE_L"):
        assert good.scores[name] > bad.scores[name]
    assert good.scores["Bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert set(good.per_item) == {1, 2, 3} and good.per_item[1]["CIDEr"] > 1.0


def test_line_breaks_inside_captions_do_not_shift_the_ptb_pairing():
    broken = {uid: text.replace(" ", "\r", 1) if uid == 1 else text for uid, text in PERFECT.items()}
    broken[2] = broken[2].replace(" ", "\u2028", 1)
    assert caption_metrics(broken, REFERENCES, metrics=("CIDEr",)).scores == \
        caption_metrics(PERFECT, REFERENCES, metrics=("CIDEr",)).scores


def test_caption_meteor_runs_and_spice_is_skipped_without_jars(monkeypatch):
    monkeypatch.setattr(caption_module, "spice_jars_missing", lambda: ["lib/stanford-corenlp-3.6.0.jar"])
    import pycocoevalcap.spice.spice as spice

    monkeypatch.setattr(spice, "Spice", lambda: pytest.fail("Spice must not be built (it downloads jars)"))
    result = caption_metrics(PERFECT, REFERENCES, metrics=("METEOR", "SPICE"))
    assert 0.5 < result.scores["METEOR"] <= 1.0
    assert "SPICE" not in result.scores and "stanford-corenlp-3.6.0.jar" in result.skipped["SPICE"]


def test_caption_fallback_without_java(monkeypatch):
    monkeypatch.setattr(caption_module.shutil, "which", lambda name: None)
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    monkeypatch.setattr(PTBTokenizer, "tokenize", lambda *a: pytest.fail("PTBTokenizer needs java"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = caption_metrics(PERFECT, REFERENCES)
    assert len([w for w in caught if "java is not on PATH" in str(w.message)]) == 1
    assert result.tokenizer == "simple (no java)"
    assert set(result.skipped) == {"METEOR", "SPICE"}
    assert result.scores["CIDEr"] > 1.0 and "METEOR" not in result.scores
    assert caption_module.simple_tokenize("A Dog's toy, red!") == "a dog s toy red"


def test_caption_missing_and_unknown_ids():
    with pytest.warns(UserWarning, match="1 of 3"):
        result = caption_metrics({1: PERFECT[1], 2: PERFECT[2]}, REFERENCES, metrics=("CIDEr",))
    assert (result.num_scored, result.num_missing) == (2, 1)
    with pytest.raises(ValueError, match="absent from the ground truth"):
        caption_metrics({**PERFECT, 7: "x"}, REFERENCES, metrics=("CIDEr",))
    with pytest.raises(ValueError, match="unknown caption metrics"):
        caption_metrics(PERFECT, REFERENCES, metrics=("BLEURT",))


def test_coco_reference_reader_checks_entries(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [{"id": 1}, {"id": 2}],
                                "annotations": [{"image_id": 1, "caption": "a", "id": 10},
                                                {"image_id": 2, "caption": "b", "id": 11},
                                                {"image_id": 1, "caption": "c", "id": 12}]}))
    assert load_coco_references(path) == {1: ["a", "c"], 2: ["b"]}
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1, "id": 10}]}))
    with pytest.raises(ValueError, match=r"captions\.json: entry 0 \(id=10\): missing field 'caption'"):
        load_coco_references(path)


# ---------------------------------------------------------------- scoring CLI
def test_cli_vqa_both_versions(tmp_path, capsys):
    questions, annotations = official_files(tmp_path)
    predictions = tmp_path / "pred.json"
    predictions.write_text(json.dumps(PREDICTIONS))
    args = ["vqa", "--predictions", str(predictions), "--questions", str(questions), "--annotations", str(annotations)]
    assert main(args) == 0
    new = json.loads(capsys.readouterr().out)
    assert main(args + ["--version", "2017"]) == 0
    old = json.loads(capsys.readouterr().out)
    assert (new["version"], new["overall"]) == ("2021", pytest.approx(40.0))
    assert (old["version"], old["overall"]) == ("2017", pytest.approx(72.5))


def test_cli_caption_and_exact_match(tmp_path, capsys):
    annotations = {"images": [{"id": uid} for uid in REFERENCES],
                   "annotations": [{"image_id": uid, "caption": c, "id": 10 * uid + k}
                                   for uid, refs in REFERENCES.items() for k, c in enumerate(refs)]}
    (tmp_path / "caps.json").write_text(json.dumps(annotations))
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": u, "caption": c} for u, c in PERFECT.items()]))
    assert main(["caption", "--predictions", str(tmp_path / "res.json"), "--annotations", str(tmp_path / "caps.json"),
                 "--metrics", "BLEU", "CIDEr"]) == 0
    assert json.loads(capsys.readouterr().out)["scores"]["CIDEr"] > 1.0

    (tmp_path / "gqa.json").write_text(json.dumps([{"question_id": "01", "label": {"yes": 1.0}},
                                                   {"question_id": "02", "answer": "cat"}]))
    (tmp_path / "ans.json").write_text(json.dumps([{"question_id": "01", "answer": "Yes"},
                                                   {"question_id": "02", "answer": "dog"}]))
    assert main(["exact-match", "--predictions", str(tmp_path / "ans.json"),
                 "--annotations", str(tmp_path / "gqa.json"), "--per-item"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overall"] == pytest.approx(50.0) and out["per_question"] == {"01": 100.0, "02": 0.0}


def test_cli_bad_file_names_file_and_entry(tmp_path, capsys):
    questions, annotations = official_files(tmp_path)
    predictions = tmp_path / "pred.json"
    predictions.write_text(json.dumps([{"question_id": 1, "answer": "x"}, {"question_id": 2, "answer": 3}]))
    code = main(["vqa", "--predictions", str(predictions), "--annotations", str(annotations)])
    err = capsys.readouterr().err
    assert code == 2 and "pred.json: entry 1 (question_id=2): 'answer' must be a string" in err
    predictions.write_text("[{")
    assert main(["vqa", "--predictions", str(predictions), "--annotations", str(annotations)]) == 2
    assert "pred.json: not valid JSON" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    questions, annotations = official_files(tmp_path)
    (tmp_path / "pred.json").write_text(json.dumps(PREDICTIONS))
    done = subprocess.run([sys.executable, "-m", "epalm.dataset.metrics.score", "vqa", "--predictions",
                           str(tmp_path / "pred.json"), "--annotations", str(annotations), "--version", "2017"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["overall"] == pytest.approx(72.5)


def test_spice_jar_check_reads_the_installed_package():
    """pycocoevalcap is a namespace package (no __file__): the check must still find its spice folder."""
    missing = caption_module.spice_jars_missing()
    assert isinstance(missing, list)
    assert all(name.endswith(".jar") for name in missing)
