"""The synthetic video and audio data sets: their MSR-VTT / MSRVTT-QA / AudioCaps files, built deterministically
and read by the task readers (the worlds themselves: tests/test_synthetic_worlds.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from epalm.dataset.metrics.attribute_accuracy import attribute_accuracy
from epalm.dataset.metrics.exact_match import exact_match_accuracy
from epalm.dataset.tasks import TASK_READERS
from epalm.demo.synthetic.audio_world import AudioWorld
from epalm.demo.synthetic.build_audio import AUDIO_DIR, build_audio_dataset
from epalm.demo.synthetic.build_audio import MARKER as AUDIO_MARKER
from epalm.demo.synthetic.build_video import MARKER as VIDEO_MARKER
from epalm.demo.synthetic.build_video import VIDEO_DIR, build_video_dataset
from epalm.demo.synthetic.video_world import VideoWorld
from epalm.models.modalities.video.decode import load_video_frames

VIDEO_SMALL = dict(n_train=10, n_val=4, n_test=5, questions_per_video=3)
AUDIO_SMALL = dict(n_train=10, n_val=4, n_test=5)
VIDEO, AUDIO = VideoWorld(), AudioWorld()
VIDEO_VOCAB, AUDIO_VOCAB = VIDEO.attribute_vocabulary(), AUDIO.attribute_vocabulary()


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, relative: str):
    return json.loads((root / relative).read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Both data sets in one data_dir, as the demo keeps them."""
    root = tmp_path_factory.mktemp("media") / "data"
    build_video_dataset(root, seed=0, progress=False, **VIDEO_SMALL)
    build_audio_dataset(root, seed=0, progress=False, **AUDIO_SMALL)
    return root


# ---------------------------------------------------------------- builds


def test_same_seed_gives_identical_files_and_another_seed_does_not(built, tmp_path):
    again = tmp_path / "again"
    build_video_dataset(again, seed=0, progress=False, **VIDEO_SMALL)
    build_audio_dataset(again, seed=0, progress=False, **AUDIO_SMALL)
    assert _hashes(built) == _hashes(again)  # annotations and media bytes
    first = built / VIDEO_DIR / "video3.mp4"
    assert np.array_equal(load_video_frames(str(first), 16, False),
                          load_video_frames(str(again / VIDEO_DIR / "video3.mp4"), 16, False))
    other = tmp_path / "other"
    build_video_dataset(other, seed=1, progress=False, **VIDEO_SMALL)
    build_audio_dataset(other, seed=1, progress=False, **AUDIO_SMALL)
    changed = {path for path, digest in _hashes(other).items() if _hashes(built).get(path) != digest}
    assert {"MSRVTT/annotation/msrvtt_caption_train7k.json", "MSRVTT/videos/all/video0.mp4",
            "audiocaps/annotation/audiocaps_caption_train.json", "audiocaps/audios/train/sound000000.wav"} <= changed


def test_a_finished_build_is_reused_and_a_changed_config_rebuilds(tmp_path):
    small = dict(n_train=3, n_val=1, n_test=2)
    video = build_video_dataset(tmp_path, seed=0, progress=False, **small)
    audio = build_audio_dataset(tmp_path, seed=0, progress=False, **small)
    assert not video.reused and not audio.reused
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert build_video_dataset(tmp_path, seed=0, progress=False, **small).reused
    assert build_audio_dataset(tmp_path, seed=0, progress=False, **small).reused
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert not build_video_dataset(tmp_path, seed=0, progress=False, **{**small, "n_test": 1}).reused
    assert len(_load(tmp_path, "MSRVTT/annotation/msrvtt_caption_test.json")) == 1
    assert _load(tmp_path, VIDEO_MARKER)["n_test"] == 1
    assert not build_audio_dataset(tmp_path, seed=2, progress=False, **small).reused
    assert _load(tmp_path, AUDIO_MARKER)["seed"] == 2
    assert not list(tmp_path.rglob(".*tmp*"))  # no temporary file left behind


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="questions_per_video"):
        build_video_dataset(tmp_path, questions_per_video=7, progress=False, n_train=1, n_val=1, n_test=1)
    with pytest.raises(ValueError, match="n_val"):
        build_video_dataset(tmp_path, n_val=0, progress=False)
    with pytest.raises(ValueError, match="n_test"):
        build_audio_dataset(tmp_path, n_test=0, progress=False)


def test_video_files_have_the_msrvtt_layouts_and_the_readers_load_them(built):
    sizes = {"train": VIDEO_SMALL["n_train"], "val": VIDEO_SMALL["n_val"], "test": VIDEO_SMALL["n_test"]}
    videos = {}
    for split, name in (("train", "train7k"), ("val", "val"), ("test", "test")):
        entries = _load(built, f"MSRVTT/annotation/msrvtt_caption_{name}.json")
        assert len(entries) == sizes[split]
        for entry in entries:
            assert set(entry) == {"video", "caption", "attributes"}
            assert len(entry["caption"]) == 5 and set(entry["attributes"]) == set(VIDEO_VOCAB)
            videos[entry["video"]] = split
    assert sorted(videos, key=lambda v: int(v[5:-4])) == [f"video{i}.mp4" for i in range(sum(sizes.values()))]
    assert _load(built, "MSRVTT/annotation/attribute_vocabulary.json") == VIDEO_VOCAB

    question_ids = []
    for split in ("train", "val", "test"):
        entries = _load(built, f"MSRVTT/annotation/msrvtt_vqa_{split}.json")
        assert len(entries) == sizes[split] * VIDEO_SMALL["questions_per_video"]
        for entry in entries:
            assert set(entry) == {"video", "question_id", "question", "answer", "answer_type", "question_type"}
            assert videos[entry["video"]] == split and entry["answer_type"] in {"yes/no", "other"}
            question_ids.append(entry["question_id"])
    assert sorted(question_ids) == list(range(1, len(question_ids) + 1))

    train = TASK_READERS.build("msrvtt_caption", built, "train")  # one Sample per caption
    assert len(train) == 5 * sizes["train"] and train.modality == "video"
    for split in ("val", "test"):
        captions = TASK_READERS.build("msrvtt_caption", built, split)
        assert len(captions) == sizes[split] and all(len(s.targets) == 5 for s in captions)
        assert all(captions.media_path(s).is_file() and set(s.meta["attributes"]) == set(VIDEO_VOCAB)
                   for s in captions)
        qa = TASK_READERS.build("video_qa", built, split)
        assert all(qa.media_path(s).is_file() for s in qa)
        truth = {s.uid: s.meta for s in qa}
        assert exact_match_accuracy({s.uid: s.targets[0] for s in qa}, truth, missing="error").overall == 100.0
    # Caption attribute accuracy from the files alone: the references state exactly their attributes.
    test = TASK_READERS.build("msrvtt_caption", built, "test")
    vocabulary = _load(built, "MSRVTT/annotation/attribute_vocabulary.json")
    attributes = {s.uid: s.meta["attributes"] for s in test}
    assert attribute_accuracy({s.uid: s.targets[0] for s in test}, attributes, vocabulary)["overall"] == 1.0
    assert attribute_accuracy({s.uid: "a red circle moves up and stays red" for s in test}, attributes,
                              vocabulary)["overall"] < 1.0


def test_audio_files_have_the_audiocaps_layout_and_the_reader_loads_them(built):
    uids = []
    for split in ("train", "val", "test"):
        entries = _load(built, f"audiocaps/annotation/audiocaps_caption_{split}.json")
        assert len(entries) == AUDIO_SMALL[f"n_{split}"]
        for entry in entries:
            assert set(entry) == {"audio", "caption", "attributes"} and entry["audio"].startswith(f"{split}/")
            assert len(entry["caption"]) == 5 and set(entry["attributes"]) == set(AUDIO_VOCAB)
            assert (built / AUDIO_DIR / entry["audio"]).is_file()
            uids.append(entry["audio"])
        reader = TASK_READERS.build("audiocaps", built, split)
        per_clip = split != "train"
        assert len(reader) == AUDIO_SMALL[f"n_{split}"] * (1 if per_clip else 5)
        assert reader.modality == "audio" and all(reader.media_path(s).is_file() for s in reader)
    assert len(set(uids)) == len(uids)
    vocabulary = _load(built, "audiocaps/annotation/attribute_vocabulary.json")
    assert vocabulary == AUDIO_VOCAB
    test = TASK_READERS.build("audiocaps", built, "test")
    attributes = {s.uid: s.meta["attributes"] for s in test}
    assert attribute_accuracy({s.uid: s.targets[-1] for s in test}, attributes, vocabulary)["overall"] == 1.0
