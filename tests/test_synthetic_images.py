"""The synthetic image world, its data set files and the text-only corpus of the offline demo."""
from __future__ import annotations

import hashlib
import itertools
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from epalm.dataset.metrics.attribute_accuracy import attribute_accuracy, parse_attributes
from epalm.dataset.metrics.caption_metrics import load_coco_references
from epalm.dataset.metrics.vqa_accuracy import vqa_accuracy
from epalm.dataset.tasks.vqa_v2 import read_vqa_v2
from epalm.demo.synthetic.build import IMAGE_DIR, MARKER, build_image_dataset
from epalm.demo.synthetic.image_world import (COLOURS, COUNTS, EXIST_COLOUR_TEMPLATES, EXIST_SHAPE_TEMPLATES,
                                           QUESTION_TEMPLATES, SHAPES, SIDES, ImageWorld)
from epalm.demo.synthetic.items import media_path_from_img_id
from epalm.demo.synthetic.text_corpus import (ANSWER_SEP, CONTEXT_SEP, EOS, build_text_corpus, qa_text,
                                           tokenizer_training_lines, write_tokenizer_training_text)
from epalm.demo.synthetic.worlds import QA, WORLDS, discover_worlds

SMALL = dict(n_train=12, n_val=5, n_test=4, questions_per_image=3)
WORLD = ImageWorld()
VOCAB = WORLD.attribute_vocabulary()


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    build_image_dataset(root, seed=3, progress=False, **SMALL)
    return root


def _load(root: Path, relative: str):
    return json.loads((root / relative).read_text())


# ---------------------------------------------------------------- build: determinism, reuse, formats


def test_same_seed_gives_identical_files_and_another_seed_does_not(built, tmp_path):
    again = tmp_path / "again"
    build_image_dataset(again, seed=3, progress=False, **SMALL)
    assert _hashes(again) == _hashes(built)
    other = tmp_path / "other"
    build_image_dataset(other, seed=4, progress=False, **SMALL)
    differ = {k for k, v in _hashes(other).items() if _hashes(built)[k] != v}
    assert "COCO/dataset_coco.json" in differ
    assert any(k.startswith(IMAGE_DIR) for k in differ)
    assert not list(built.rglob(".*tmp*")), "temporary files left behind"


def test_complete_build_is_reused_and_a_changed_config_rebuilds(tmp_path):
    root = tmp_path / "d"
    first = build_image_dataset(root, seed=0, progress=False, **SMALL)
    assert not first.reused
    stamp = (root / "COCO" / "dataset_coco.json").stat().st_mtime_ns
    assert build_image_dataset(root, seed=0, progress=False, **SMALL).reused
    assert (root / "COCO" / "dataset_coco.json").stat().st_mtime_ns == stamp
    rebuilt = build_image_dataset(root, seed=0, progress=False, **{**SMALL, "n_test": 3})
    assert not rebuilt.reused
    assert len(_load(root, "vqa/karpathy_test.json")) == 3 * SMALL["questions_per_image"]
    assert _load(root, MARKER)["n_test"] == 3


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="questions_per_image"):
        build_image_dataset(tmp_path, questions_per_image=7, progress=False, n_train=1, n_val=1, n_test=1)
    with pytest.raises(ValueError, match="n_val"):
        build_image_dataset(tmp_path, n_val=0, progress=False)


def test_vqa_files_have_the_vl_t5_and_official_layouts(built):
    qpi = SMALL["questions_per_image"]
    ans2label = _load(built, "vqa/trainval_ans2label.json")
    assert sorted(ans2label.values()) == list(range(len(ans2label)))
    lists = {s: _load(built, f"vqa/karpathy_{s}.json") for s in ("train", "val", "test")}
    for split, entries in lists.items():
        assert len(entries) == SMALL[f"n_{split}"] * qpi
        for e in entries:
            assert set(e) == {"img_id", "sent", "question_id", "label", "answer_type", "question_type"}
            assert e["answer_type"] in {"yes/no", "number", "other"}
            (answer, score), = e["label"].items()
            assert score == 1.0 and (split == "test" or answer in ans2label)
            assert (built / IMAGE_DIR / media_path_from_img_id(e["img_id"])).is_file()
            assert e["img_id"].startswith("COCO_train2014_" if split == "train" else "COCO_val2014_")
    all_ids = [e["question_id"] for entries in lists.values() for e in entries]
    assert len(all_ids) == len(set(all_ids))

    for split in ("val", "test"):
        questions = _load(built, f"vqa/karpathy_{split}_questions.json")["questions"]
        annotations = _load(built, f"vqa/karpathy_{split}_annotations.json")["annotations"]
        by_id = {e["question_id"]: e for e in lists[split]}
        assert {q["question_id"] for q in questions} == set(by_id) == {a["question_id"] for a in annotations}
        for q in questions:
            assert q["question"] == by_id[q["question_id"]]["sent"]
            assert f"{q['image_id']:012d}" == by_id[q["question_id"]]["img_id"][-12:]
        for a in annotations:
            entry = by_id[a["question_id"]]
            assert a["multiple_choice_answer"] == next(iter(entry["label"]))
            assert a["answer_type"] == entry["answer_type"] and a["question_type"] == entry["question_type"]
            assert len(a["answers"]) == 10
            assert {x["answer"] for x in a["answers"]} == {a["multiple_choice_answer"]}
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert all(x["answer_confidence"] == "yes" for x in a["answers"])
    combined = _load(built, "vqa/v2_mscoco_val2014_annotations.json")["annotations"]
    assert {a["question_id"] for a in combined} == {e["question_id"] for e in lists["val"] + lists["test"]}
    assert len(_load(built, "vqa/v2_OpenEnded_mscoco_val2014_questions.json")["questions"]) == len(combined)


def test_coco_files_have_the_karpathy_and_caption_layouts(built):
    coco = _load(built, "COCO/dataset_coco.json")
    assert coco["attribute_vocabulary"] == VOCAB
    images = coco["images"]
    assert Counter(im["split"] for im in images) == {"train": 12, "val": 5, "test": 4}
    assert len({im["cocoid"] for im in images}) == len(images)
    sentids = [s["sentid"] for im in images for s in im["sentences"]]
    assert sentids == list(range(len(sentids)))
    for imgid, im in enumerate(images):
        assert im["imgid"] == imgid
        assert (built / IMAGE_DIR / im["filepath"] / im["filename"]).is_file()
        assert len(im["sentences"]) == 5
        for s in im["sentences"]:
            assert set(s) == {"raw", "tokens", "imgid", "sentid"} and s["imgid"] == imgid
            assert s["tokens"] == s["raw"].split()
        assert set(im["attributes"]) == set(VOCAB)
    for split in ("val", "test"):
        gt = _load(built, f"COCO/coco_karpathy_{split}_gt.json")
        ids = {im["cocoid"] for im in images if im["split"] == split}
        assert {im["id"] for im in gt["images"]} == ids
        assert len(gt["annotations"]) == 5 * len(ids)
        assert {a["image_id"] for a in gt["annotations"]} == ids
        assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])
    # The VQA and caption files describe the same image files.
    vqa_files = {media_path_from_img_id(e["img_id"]) for e in _load(built, "vqa/karpathy_val.json")}
    assert vqa_files == {f"{im['filepath']}/{im['filename']}" for im in images if im["split"] == "val"}


def test_the_project_readers_and_metrics_load_the_files_unchanged(built):
    split = read_vqa_v2(built, "karpathy_test", human_answers=True)
    assert len(split) == SMALL["n_test"] * SMALL["questions_per_image"]
    assert all(split.media_path(sample).is_file() for sample in split)
    truth = {sample.uid: sample.meta for sample in split}
    assert vqa_accuracy({s.uid: s.targets[0] for s in split}, truth, missing="error").overall == 100.0
    assert vqa_accuracy({s.uid: "yes" for s in split}, truth).overall < 100.0
    references = load_coco_references(built / "COCO" / "coco_karpathy_test_gt.json")
    coco = _load(built, "COCO/dataset_coco.json")["images"]
    assert references == {im["cocoid"]: [s["raw"] for s in im["sentences"]] for im in coco if im["split"] == "test"}


def test_media_path_from_img_id_follows_the_coco_naming():
    assert media_path_from_img_id("COCO_val2014_000000000042") == "val2014/COCO_val2014_000000000042.jpg"
    with pytest.raises(ValueError, match="img_id"):
        media_path_from_img_id("val_42")


def test_no_constant_answer_gets_more_than_about_half_of_a_question_type(tmp_path):
    root = tmp_path / "big"
    build_image_dataset(root, seed=0, n_train=1500, n_val=1, n_test=1, questions_per_image=3, progress=False)
    answers: dict[str, Counter] = {}
    for e in _load(root, "vqa/karpathy_train.json"):
        answers.setdefault(e["question_type"], Counter())[next(iter(e["label"]))] += 1
    assert set(answers) == {"colour", "shape", "count", "where", "exist"}
    for qtype, counts in answers.items():
        top_share = counts.most_common(1)[0][1] / sum(counts.values())
        assert top_share <= 0.55, (qtype, counts)
        assert sum(counts.values()) > 300, (qtype, counts)
    assert set(answers["exist"]) == {"yes", "no"}


# ---------------------------------------------------------------- the world itself


def _blobs(path: Path) -> list[dict]:
    """Saturated connected regions of the picture (the background is light and nearly grey)."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    mask = pixels.max(axis=2) - pixels.min(axis=2) > 90
    labels, found = ndimage.label(mask)
    blobs = []
    for index in range(1, found + 1):
        ys, xs = np.nonzero(labels == index)
        if len(ys) < 5:  # JPEG speckle
            continue
        mean = pixels[ys, xs].mean(axis=0)
        blobs.append({
            "colour": min(COLOURS, key=lambda c: np.linalg.norm(mean - np.array(COLOURS[c]))),
            "fill": len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)),
            "xs": (xs.min(), xs.max()),
        })
    return blobs


def test_rendered_image_shows_the_stated_count_colour_shape_and_side(tmp_path):
    for i, (count, colour, shape, side) in enumerate(itertools.product(COUNTS, COLOURS, SHAPES, SIDES)):
        scene = {"count": count, "colour": colour, "shape": shape, "side": side}
        path = tmp_path / f"{i}.jpg"
        WORLD.render(scene, random.Random(i), path)
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (48, 48)
        blobs = _blobs(path)
        assert len(blobs) == count, scene
        for blob in blobs:
            assert blob["colour"] == colour, scene
            assert (blob["xs"][1] < 24) if side == "left" else (blob["xs"][0] >= 24), scene
            # Filled share of the bounding box: square 1, circle ~pi/4, triangle ~1/2.
            fill_shape = "square" if blob["fill"] > 0.92 else "circle" if blob["fill"] > 0.65 else "triangle"
            assert fill_shape == shape, (scene, blob["fill"])


def test_render_is_deterministic_given_the_rng(tmp_path):
    scene = {"count": 3, "colour": "green", "shape": "circle", "side": "right"}
    WORLD.render(scene, random.Random(7), tmp_path / "a.jpg")
    WORLD.render(scene, random.Random(7), tmp_path / "b.jpg")
    WORLD.render(scene, random.Random(8), tmp_path / "c.jpg")
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "b.jpg").read_bytes()
    assert (tmp_path / "a.jpg").read_bytes() != (tmp_path / "c.jpg").read_bytes()


def test_every_caption_states_every_attribute_and_nothing_else():
    rng = random.Random(0)
    templates_seen = set()
    for _ in range(400):
        scene = WORLD.sample_scene(rng)
        truth = WORLD.attributes(scene)
        captions = WORLD.captions(scene, rng)
        assert len(captions) == 5 and len(set(captions)) == 5
        for caption in captions:
            assert {a: {v} for a, v in truth.items()} == parse_attributes(caption, VOCAB), caption
        templates_seen.update(captions)
    score = attribute_accuracy({0: "two red circles on the left"}, {0: {"count": "2", "colour": "red",
                               "shape": "circle", "side": "left"}}, VOCAB)
    assert score["overall"] == 1.0
    assert any(c.startswith("a single ") for c in templates_seen) and any(" a " in c for c in templates_seen)


def test_questions_are_answered_by_the_scene():
    rng = random.Random(1)
    for _ in range(300):
        scene = WORLD.sample_scene(rng)
        qas = WORLD.questions(scene, rng)
        assert all(isinstance(qa, QA) for qa in qas)
        for qa in qas:
            assert qa.answer == _answer(qa.question, scene), (qa, scene)


def _answer(question: str, scene: dict) -> str:
    """An independent reading of a question against the scene."""
    for qtype, key in (("colour", "colour"), ("shape", "shape"), ("count", "count"), ("where", "side")):
        if question in QUESTION_TEMPLATES[qtype]:
            return str(scene[key])
    words = question.rstrip("?").split()
    for template in EXIST_COLOUR_TEMPLATES:
        for colour in COLOURS:
            if question == template.format(c=colour):
                return "yes" if colour == scene["colour"] else "no"
    for template in EXIST_SHAPE_TEMPLATES:
        for shape in SHAPES:
            if question == template.format(s=shape):
                return "yes" if shape == scene["shape"] else "no"
    raise AssertionError(f"unknown question {question!r} ({words})")


def test_the_image_world_is_registered():
    assert "image" in discover_worlds()
    assert isinstance(WORLDS.build("image"), ImageWorld)


# ---------------------------------------------------------------- text-only corpus


def test_corpus_is_deterministic_and_uses_the_shared_text_format():
    docs = build_text_corpus(seed=5, n_documents=600, worlds=["image"])
    assert docs == build_text_corpus(seed=5, n_documents=600, worlds=["image"])
    assert docs != build_text_corpus(seed=6, n_documents=600, worlds=["image"])
    assert all(doc.endswith(EOS) for doc in docs)
    qa_docs = [d for d in docs if ANSWER_SEP in d]
    assert 0.5 < len(qa_docs) / len(docs) < 0.8
    assert qa_text("how many shapes are there?", "2") == "how many shapes are there?</a>2</s>"
    assert any(d.count(ANSWER_SEP) == 3 for d in qa_docs) and any(d.count(ANSWER_SEP) == 1 for d in qa_docs)


def test_corpus_answers_follow_from_the_context_alone():
    docs = build_text_corpus(seed=0, n_documents=800, worlds=["image"])
    kinds = Counter()
    for doc in docs:
        if ANSWER_SEP not in doc:
            kinds["caption" if CONTEXT_SEP not in doc else "paraphrase"] += 1
            if CONTEXT_SEP in doc:  # the paraphrase describes the same scene as its context
                first, second = doc[: -len(EOS)].split(CONTEXT_SEP)
                assert parse_attributes(first, VOCAB) == parse_attributes(second, VOCAB)
            continue
        context, rest = doc.split(CONTEXT_SEP, 1)
        scene = _scene_from_context(context)
        kinds["keywords_qa" if scene.pop("keywords") else "caption_qa"] += 1
        pairs = rest[: -len(EOS)].split(EOS)
        for pair in pairs:
            question, answer = pair.split(ANSWER_SEP)
            assert answer == _answer(question, scene), doc
    assert min(kinds.values()) > 50, kinds


def _scene_from_context(context: str) -> dict:
    words = context.split()
    if len(words) == 4 and words[0] not in ("a", "on", "the", "there", "one"):  # keyword context
        values = set(words)
        return {"count": next(int(v) for v in values if v.isdigit()),
                "colour": next(v for v in values if v in COLOURS),
                "shape": next(v for v in values if v in SHAPES),
                "side": next(v for v in values if v in SIDES), "keywords": True}
    stated = parse_attributes(context, VOCAB)
    (count,), (colour,), (shape,), (side,) = (stated[a] for a in ("count", "colour", "shape", "side"))
    return {"count": int(count), "colour": colour, "shape": shape, "side": side, "keywords": False}


def test_tokenizer_text_has_no_special_tokens_and_covers_the_vocabulary(tmp_path):
    docs = build_text_corpus(seed=0, n_documents=2000)
    path = write_tokenizer_training_text(tmp_path / "tok.txt", docs)
    lines = path.read_text().splitlines()
    assert len(lines) == len(docs) and lines == tokenizer_training_lines(docs)
    assert not any(EOS in line or ANSWER_SEP in line for line in lines)
    words = {w for line in lines for w in line.replace("?", " ").split()}
    needed = {w for phrases in VOCAB.values() for forms in phrases.values() for f in forms for w in f.split()}
    assert needed - {"1", "2", "3"} <= words  # digits appear as answers, checked below
    assert {"1", "2", "3", "yes", "no"} <= words


def test_a_world_named_in_a_fresh_process_is_found():
    code = ("from epalm.demo.synthetic.text_corpus import build_text_corpus; "
            "print(len(build_text_corpus(0, 3, worlds=['image'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "3", out.stderr


def test_corpus_rejects_a_bad_mix():
    with pytest.raises(ValueError, match="mix"):
        build_text_corpus(0, 10, worlds=["image"], mix={"story": 1.0})
