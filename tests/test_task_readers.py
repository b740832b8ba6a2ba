"""Task readers on tiny hand-written annotation files, including malformed ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from epalm.dataset.metrics.exact_match import exact_match_accuracy
from epalm.dataset.metrics.vqa_accuracy import vqa_accuracy
from epalm.dataset.tasks import TASK_READERS, TaskSplit


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


VQA_ENTRIES = [
    {"img_id": "COCO_val2014_000000000042", "sent": "What color is the bus?", "question_id": 42000,
     "label": {"red": 0.6, "dark red": 0.3, "maroon": 1}, "answer_type": "other", "question_type": "what color is the"},
    {"img_id": "COCO_val2014_000000000042", "sent": "How many buses?", "question_id": 42001,
     "label": {}, "answer_type": "number", "question_type": "how many"},
]


def official_val_annotations(data_dir: Path) -> None:
    answers = {42000: ["maroon"] * 4 + ["red"] * 2 + ["dark red"] * 4, 42001: ["2"] * 10}
    write(data_dir / "vqa" / "v2_mscoco_val2014_annotations.json", {"annotations": [
        {"question_id": qid, "image_id": 42, "answer_type": "other", "question_type": "what",
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(given)]}
        for qid, given in answers.items()]})


def test_registry_names():
    assert set(TASK_READERS.names()) >= {"vqa_v2", "gqa", "coco_caption", "msrvtt_caption", "video_qa", "audiocaps"}


def test_vqa_v2_reader_and_official_accuracy_from_meta(tmp_path):
    write(tmp_path / "vqa" / "karpathy_test.json", VQA_ENTRIES)
    official_val_annotations(tmp_path)
    split = TASK_READERS.build("vqa_v2", tmp_path, "karpathy_test")
    assert isinstance(split, TaskSplit) and len(split) == 2 and split.kind == "qa" and split.modality == "image"
    first = split[0]
    assert first.uid == 42000 and first.prompt == "What color is the bus?"
    assert first.media == "val2014/COCO_val2014_000000000042.jpg"
    assert split.media_path(first) == tmp_path / "COCO" / "images" / "val2014" / "COCO_val2014_000000000042.jpg"
    assert first.targets == ["maroon", "red", "dark red"] and first.target_weights == [1.0, 0.6, 0.3]
    assert first.meta["label"] == VQA_ENTRIES[0]["label"] and first.meta["image_id"] == 42
    assert first.meta["answer_type"] == "other" and len(first.meta["answers"]) == 10
    assert split[1].targets == [] and split[1].target_weights == []
    # The meta is the ground truth the metric needs: "maroon" has 4 human answers (1.0), "two" vs
    # ten "2" answers is 0 in the 2021 evaluator.
    result = vqa_accuracy({42000: "maroon", 42001: "two"}, {s.uid: s.meta for s in split})
    assert result.overall == pytest.approx(50.0)


def test_vqa_v2_human_answers_options(tmp_path):
    write(tmp_path / "vqa" / "karpathy_test.json", VQA_ENTRIES)
    assert "answers" not in TASK_READERS.build("vqa_v2", tmp_path, "karpathy_test")[0].meta
    with pytest.raises(FileNotFoundError, match="v2_mscoco_val2014_annotations.json"):
        TASK_READERS.build("vqa_v2", tmp_path, "karpathy_test", human_answers=True)
    official_val_annotations(tmp_path)
    split = TASK_READERS.build("vqa_v2", tmp_path, "karpathy_test", human_answers=False, media_root=tmp_path / "img")
    assert "answers" not in split[0].meta and split.media_root == tmp_path / "img"


def test_vqa_v2_keeps_extra_fields_and_plain_image_ids(tmp_path):
    entry = {"img_id": "scene_7", "sent": "What shape?", "question_id": 7, "label": {"circle": 1.0},
             "answer_type": "shape", "question_type": "what shape", "attributes": {"shape": "circle"},
             "answers": ["circle"] * 10}
    write(tmp_path / "vqa" / "demo_test.json", [entry])
    sample = TASK_READERS.build("vqa_v2", tmp_path, "demo_test", human_answers=True)[0]
    assert sample.media == "scene_7.jpg" and sample.meta["attributes"] == {"shape": "circle"}
    assert vqa_accuracy({7: "a circle"}, {sample.uid: sample.meta}).overall == 0.0  # all identical: no normalising
    assert vqa_accuracy({7: "circle"}, {sample.uid: sample.meta}).overall == 100.0


@pytest.mark.parametrize("content, message", [
    ("[{", r"karpathy_val\.json: not valid JSON"),
    ({"not": "a list"}, r"karpathy_val\.json: top level must be a list"),
    ([VQA_ENTRIES[0], {**VQA_ENTRIES[1], "sent": 5}],
     r"karpathy_val\.json: entry 1 \(question_id=42001\): field 'sent' must be a string, got int"),
    ([{k: v for k, v in VQA_ENTRIES[0].items() if k != "img_id"}],
     r"entry 0 \(question_id=42000\): missing field 'img_id'"),
    ([{**VQA_ENTRIES[0], "label": {"red": "high"}}], r"entry 0 \(question_id=42000\): field 'label' must map"),
    ([{k: v for k, v in VQA_ENTRIES[0].items() if k != "sent"}], r"field 'sent' or 'question'"),
    (["just a string"], r"entry 0: expected an object with field '\w+', got str"),
])
def test_vqa_v2_malformed_files(tmp_path, content, message):
    write(tmp_path / "vqa" / "karpathy_val.json", content)
    with pytest.raises(ValueError, match=message):
        TASK_READERS.build("vqa_v2", tmp_path, "karpathy_val", human_answers=False)


def test_unknown_split_names_the_file_and_known_splits(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vqa/nope\.json.*karpathy_test"):
        TASK_READERS.build("vqa_v2", tmp_path, "nope")


def test_gqa_reader(tmp_path):
    write(tmp_path / "GQA" / "testdev.json", [
        {"img_id": "n356822", "label": {"pipe": 1.0}, "question_id": "07333408", "sent": "What is on the wall?"}])
    split = TASK_READERS.build("gqa", tmp_path, "testdev")
    sample = split[0]
    assert (sample.uid, sample.media, sample.targets) == ("07333408", "n356822.jpg", ["pipe"])
    assert split.media_root == tmp_path / "GQA" / "images"
    assert exact_match_accuracy({"07333408": "Pipe."}, {s.uid: s.meta for s in split}).overall == 100.0


def test_video_qa_reader_with_answer_strings(tmp_path):
    write(tmp_path / "MSVD" / "annotation" / "msvd_vqa_test.json", [
        {"video": "00jrXRMlZOY_0_10.avi", "question": "what is a man doing?", "answer": "ride", "question_id": 3}])
    split = TASK_READERS.build("video_qa", tmp_path, "test", dataset="msvd")
    assert split.modality == "video" and split.media_root == tmp_path / "MSVD" / "videos" / "all"
    sample = split[0]
    assert (sample.prompt, sample.targets, sample.media) == ("what is a man doing?", ["ride"], "00jrXRMlZOY_0_10.avi")
    assert sample.meta["video_id"] == "00jrXRMlZOY_0_10"
    assert TASK_READERS.build("msvd_qa", tmp_path, "test")[0].uid == 3
    with pytest.raises(ValueError, match="unknown dataset"):
        TASK_READERS.build("video_qa", tmp_path, "test", dataset="tgif")


def karpathy_coco(tmp_path: Path) -> None:
    def image(cocoid, split, n):
        return {"filepath": "val2014", "filename": f"COCO_val2014_{cocoid:012d}.jpg", "imgid": cocoid, "split": split,
                "cocoid": cocoid, "sentids": list(range(n)),
                "sentences": [{"raw": f" caption {k} of {cocoid} ", "sentid": k, "tokens": []} for k in range(n)]}
    write(tmp_path / "COCO" / "dataset_coco.json", {"dataset": "coco", "images": [
        image(1, "train", 2), image(2, "restval", 3), image(3, "test", 2), image(4, "val", 1)]})


def test_coco_caption_reader(tmp_path):
    karpathy_coco(tmp_path)
    train = TASK_READERS.build("coco_caption", tmp_path, "karpathy_train")
    assert len(train) == 5  # one Sample per caption, restval included
    assert [s.targets for s in train[:2]] == [["caption 0 of 1"], ["caption 1 of 1"]]
    assert train[2].uid == 2 and train[2].meta["caption_index"] == 0 and "sentences" not in train[2].meta
    test = TASK_READERS.build("coco_caption", tmp_path, "test")
    assert len(test) == 1 and test[0].targets == ["caption 0 of 3", "caption 1 of 3"]
    assert test[0].media == "val2014/COCO_val2014_000000000003.jpg" and test[0].prompt == ""
    assert len(TASK_READERS.build("coco_caption", tmp_path, "train", per_caption=False)) == 2
    with pytest.raises(ValueError, match="unknown split"):
        TASK_READERS.build("coco_caption", tmp_path, "minival")


def test_coco_caption_malformed(tmp_path):
    karpathy_coco(tmp_path)
    path = tmp_path / "COCO" / "dataset_coco.json"
    data = json.loads(path.read_text())
    data["images"][2]["sentences"][1] = {"tokens": []}
    write(path, data)
    with pytest.raises(ValueError, match=r"dataset_coco\.json: entry 2 \(cocoid=3\): sentence 1: missing field 'raw'"):
        TASK_READERS.build("coco_caption", tmp_path, "test")
    write(path, {"images": [{"filename": "x.jpg", "split": "holdout", "cocoid": 9, "sentences": []}]})
    with pytest.raises(ValueError, match=r"entry 0 \(cocoid=9\): field 'split' is 'holdout'"):
        TASK_READERS.build("coco_caption", tmp_path, "test")
    write(path, [])
    with pytest.raises(ValueError, match=r"dataset_coco\.json: expected a JSON object with a 'images' list"):
        TASK_READERS.build("coco_caption", tmp_path, "test")


def test_msrvtt_caption_reader_merges_clips_for_evaluation(tmp_path):
    entries = [{"video": "video7010.mp4", "caption": "a man sings"},
               {"video": "video7010.mp4", "caption": ["a man is singing", "someone sings"]},
               {"video": "video7011.mp4", "caption": "a cat jumps", "extra": 1}]
    write(tmp_path / "MSRVTT" / "annotation" / "msrvtt_caption_test.json", entries)
    write(tmp_path / "MSRVTT" / "annotation" / "msrvtt_caption_train7k.json", entries)
    test = TASK_READERS.build("msrvtt_caption", tmp_path, "test")
    assert [s.uid for s in test] == ["video7010", "video7011"]
    assert test[0].targets == ["a man sings", "a man is singing", "someone sings"]
    assert test[1].meta == {"video": "video7011.mp4", "extra": 1} and test.modality == "video"
    assert test.media_root == tmp_path / "MSRVTT" / "videos" / "all"
    train = TASK_READERS.build("msrvtt_caption", tmp_path, "train")  # alias of train7k, one Sample per caption
    assert train.split == "train7k" and len(train) == 4 and all(len(s.targets) == 1 for s in train)


def test_audiocaps_reader_and_malformed_caption(tmp_path):
    path = write(tmp_path / "audiocaps" / "annotation" / "audiocaps_caption_val.json",
                 [{"audio": "val/--L22BmDI6E.wav", "caption": ["a dog barks", "barking"]}])
    split = TASK_READERS.build("audiocaps", tmp_path, "val")
    assert split.modality == "audio" and split.media_root == tmp_path / "audiocaps" / "audios"
    assert (split[0].uid, split[0].media, split[0].targets) == ("val/--L22BmDI6E", "val/--L22BmDI6E.wav",
                                                                  ["a dog barks", "barking"])
    write(path, [{"audio": "a.wav", "caption": ["fine"]}, {"audio": "b.wav", "caption": [3]}])
    with pytest.raises(ValueError, match=r"audiocaps_caption_val\.json: entry 1 \(audio='b\.wav'\): field 'caption'"):
        TASK_READERS.build("audiocaps", tmp_path, "val")
    write(path, [{"caption": "no audio"}])
    with pytest.raises(ValueError, match=r"entry 0: missing field 'audio' \(expected a string\)"):
        TASK_READERS.build("audiocaps", tmp_path, "val")


# ---------------------------------------------------------------- a user's own files: any extension, folders


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def caption_entry(filename: str, split: str = "test", **extra) -> dict:
    return {"filename": filename, "split": split, "cocoid": len(filename), "sentences": [{"raw": "a photo"}], **extra}


def test_caption_reader_finds_the_image_by_the_name_written(tmp_path):
    """Without `filepath`, `astronaut_16.png` was looked up as `astronaut_16.jpg`."""
    images = tmp_path / "COCO" / "images"
    for name in ("astronaut_16.png", "beach.PNG", "trip/dune.jpeg", "val2014/COCO_val2014_000000000042.jpg"):
        touch(images / name)
    write(tmp_path / "COCO" / "dataset_coco.json", {"images": [
        caption_entry("astronaut_16.png"), caption_entry("beach.jpg"), caption_entry("dune.jpg", filepath="trip"),
        caption_entry("COCO_val2014_000000000042.jpg"), caption_entry("ghost.png")]})
    split = TASK_READERS.build("coco_caption", tmp_path, "test")
    assert [s.media for s in split] == ["astronaut_16.png", "beach.PNG", "trip/dune.jpeg",
                                        "val2014/COCO_val2014_000000000042.jpg", "ghost.png"]
    assert "`<filename>` as written" in split.media_rule and "any extension" in split.media_rule


def test_vqa_reader_finds_the_image_of_an_img_id_with_any_extension_and_folders(tmp_path):
    """The VQA reader always read `<img_id>.jpg`: a PNG data set had to be copied to JPEG."""
    images = tmp_path / "COCO" / "images"
    for name in ("beach01.png", "trip/dune02.jpeg", "cat.jpg", "COCO_val2014_000000000042.png"):
        touch(images / name)
    entries = [{"img_id": img_id, "sent": "what is it?", "question_id": k, "answer": "sand"}
               for k, img_id in enumerate(["beach01", "trip/dune02", "cat", "COCO_val2014_000000000042", "ghost",
                                           "beach01.png"])]
    write(tmp_path / "vqa" / "mine.json", entries)
    split = TASK_READERS.build("vqa_v2", tmp_path, "mine")
    assert [s.media for s in split] == ["beach01.png", "trip/dune02.jpeg", "cat.jpg",
                                        "COCO_val2014_000000000042.png", "ghost.jpg", "beach01.png"]
    assert "`<img_id>.jpg`" in split.media_rule and "any extension" in split.media_rule


def test_questions_with_only_human_answers_train_on_them(tmp_path):
    answers = ["cat"] * 7 + ["kitten"] * 2 + [{"answer": "tabby cat"}]
    write(tmp_path / "vqa" / "mine.json", [{"img_id": "cat", "sent": "what?", "question_id": 1, "answers": answers}])
    (sample,) = TASK_READERS.build("vqa_v2", tmp_path, "mine")
    assert sample.targets == ["cat", "kitten", "tabby cat"] and sample.target_weights == [7.0, 2.0, 1.0]
    assert vqa_accuracy({1: "kitten"}, {1: sample.meta}).overall == pytest.approx(60.0)
