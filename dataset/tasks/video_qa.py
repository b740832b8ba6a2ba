"""MSRVTT-QA and MSVD-QA: `<data_dir>/{MSRVTT,MSVD}/annotation/{msrvtt,msvd}_vqa_<split>.json`,
videos under `<data_dir>/{MSRVTT,MSVD}/videos/all/<video>`."""
from __future__ import annotations

from functools import partial
from pathlib import Path, PurePosixPath
from typing import Literal

from epalm.common.errors import ConfigError, did_you_mean
from epalm.dataset.tasks.annotation_file import entry_list, load_json, location, require
from epalm.dataset.tasks.qa_entries import qa_sample
from epalm.dataset.tasks.task_split import TASK_READERS, TaskSplit, annotation_path

VIDEO_QA_SPLITS = ("train", "val", "test")
VIDEO_QA_FOLDERS = {"msrvtt": "MSRVTT", "msvd": "MSVD"}


@TASK_READERS.register("video_qa")
def read_video_qa(data_dir: str | Path, split: str, dataset: Literal["msrvtt", "msvd"] = "msrvtt",
                  media_root: str | Path | None = None) -> TaskSplit:
    """Questions about videos; uid = question_id, answers from `label` or `answer`."""
    if dataset not in VIDEO_QA_FOLDERS:
        raise ConfigError(f"video_qa: unknown dataset {dataset!r}{did_you_mean(dataset, VIDEO_QA_FOLDERS)}; "
                          f"expected one of {tuple(VIDEO_QA_FOLDERS)}")
    root = Path(data_dir) / VIDEO_QA_FOLDERS[dataset]
    path = annotation_path(root / "annotation" / f"{dataset}_vqa_{split}.json", split, VIDEO_QA_SPLITS)
    samples = []
    for index, entry in enumerate(entry_list(load_json(path), path)):
        where = location(path, index, entry, "question_id")
        video = require(entry, "video", str, where)
        samples.append(qa_sample(entry, where, video, {"video_id": str(PurePosixPath(video).with_suffix(""))}))
    return TaskSplit(task=f"{dataset}_qa", split=split, kind="qa", modality="video",
                     media_root=Path(media_root) if media_root else root / "videos" / "all",
                     annotation_file=path, samples=samples)


TASK_READERS.register("msrvtt_qa")(partial(read_video_qa, dataset="msrvtt"))
TASK_READERS.register("msvd_qa")(partial(read_video_qa, dataset="msvd"))
