"""GQA in the VL-T5 files: `<data_dir>/GQA/<split>.json`, images `<data_dir>/GQA/images/<img_id>.jpg` (or any
extension: media_lookup.py).

GQA's own `images.zip` holds every image (train, val, testdev); VL-T5 users who keep train/valid
images in `VG/VG_100K` pass that folder as `media_root`.
"""
from __future__ import annotations

from pathlib import Path

from epalm.dataset.tasks.annotation_file import entry_list, load_json, location, require
from epalm.dataset.tasks.media_lookup import MediaLookup
from epalm.dataset.tasks.qa_entries import qa_sample
from epalm.dataset.tasks.task_split import TASK_READERS, TaskSplit, annotation_path

GQA_SPLITS = ("train", "valid", "testdev")


@TASK_READERS.register("gqa")
def read_gqa(data_dir: str | Path, split: str, media_root: str | Path | None = None) -> TaskSplit:
    """GQA questions of one split; uid = question_id (a string in GQA), answers from `label`."""
    data_dir = Path(data_dir)
    path = annotation_path(data_dir / "GQA" / f"{split}.json", split, GQA_SPLITS)
    root = Path(media_root) if media_root else data_dir / "GQA" / "images"
    lookup = MediaLookup(root)
    samples = []
    for index, entry in enumerate(entry_list(load_json(path), path)):
        where = location(path, index, entry, "question_id")
        img_id = str(require(entry, "img_id", (str, int), where))
        samples.append(qa_sample(entry, where, lookup.find([f"{img_id}.jpg"]), {"image_id": img_id}))
    return TaskSplit(task="gqa", split=split, kind="qa", modality="image", media_root=root, annotation_file=path,
                     samples=samples, media_rule="the image of an `img_id` is `<img_id>.jpg` under the media root, "
                                                 "or the same name with any extension")
