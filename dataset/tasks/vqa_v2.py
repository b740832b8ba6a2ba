"""VQA v2 in the VL-T5 files: `<data_dir>/vqa/<split>.json`, images under `<data_dir>/COCO/images`.

The image of `img_id` "COCO_train2014_000000123456" is `train2014/COCO_train2014_000000123456.jpg`; another id
(a user's own data, synthetic data) is `<img_id>.jpg` under the media root, its folders included (`trip/beach01`),
or, when that file is not there, the same name with any extension (`trip/beach01.png`: media_lookup.py).
The official VQA accuracy needs the 10 human answers, which the VL-T5 files do not have (their `label`
keeps only the frequent answers, scored). They come from an entry's own `answers` field, or from the
official `vqa/v2_mscoco_{train,val}2014_annotations.json` (the eP-ALM layout keeps them there) into
`Sample.meta["answers"]`.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from epalm.common.errors import DataFormatError, MissingFileError
from epalm.dataset.records import Sample
from epalm.dataset.tasks.annotation_file import entry_list, load_json, location, require
from epalm.dataset.tasks.media_lookup import MediaLookup, without_suffix
from epalm.dataset.tasks.qa_entries import qa_sample
from epalm.dataset.tasks.task_split import TASK_READERS, TaskSplit, annotation_path

logger = logging.getLogger(__name__)

VQA_SPLITS = ("train_standard", "karpathy_train", "karpathy_val", "karpathy_test", "val_standard")
OFFICIAL_ANNOTATIONS = {
    "train2014": "v2_mscoco_train2014_annotations.json",
    "val2014": "v2_mscoco_val2014_annotations.json",
}
_COCO_IMAGE = re.compile(r"^COCO_([A-Za-z]+\d{4})_(\d+)$")


def coco_image_path(img_id: str) -> tuple[str, int | str]:
    """`COCO_val2014_000000000042` -> (`val2014/COCO_val2014_000000000042.jpg`, 42); others -> (`<id>.jpg`, id)."""
    match = _COCO_IMAGE.match(img_id)
    if match is None:
        return f"{img_id}.jpg", img_id
    return f"{match.group(1)}/{img_id}.jpg", int(match.group(2))


def image_candidates(img_id: str) -> list[str]:
    """Where the image of an `img_id` may be, the format's own path first: `val2014/COCO_val2014_...jpg` then the
    id directly under the root for COCO ids; `<img_id>.jpg` (and `<img_id>` itself when it names a file with its
    extension) for others. MediaLookup also tries any extension."""
    default, _ = coco_image_path(img_id)
    written = [img_id] if without_suffix(img_id) != img_id else []
    return [*written, default] + ([f"{img_id}.jpg"] if default != f"{img_id}.jpg" else [])


VQA_MEDIA_RULE = ("the image of an `img_id` is `<img_id>.jpg` under the media root (folders in the id included; "
                  "COCO ids COCO_<folder>_<number> in `<folder>/`), or the same name with any extension")


def attach_human_answers(samples: list[Sample], vqa_dir: Path, required: bool | None) -> None:
    """Put the official human answers into `meta["answers"]` of samples that lack them.

    required None: use the official files that exist; True: a needed file that is absent is an error.
    """
    # Imported here: epalm.dataset.metrics reads files through epalm.dataset.tasks, a top-level import would be a cycle.
    from epalm.dataset.metrics.vqa_accuracy import load_vqa_ground_truth

    by_folder: dict[str, list[Sample]] = {}
    for sample in samples:
        if "answers" not in sample.meta:
            by_folder.setdefault(sample.media.split("/")[0] if "/" in sample.media else "", []).append(sample)
    for folder, group in by_folder.items():
        if folder not in OFFICIAL_ANNOTATIONS:
            if required:
                raise DataFormatError(f"{len(group)} question(s) on non-COCO images (e.g. question_id "
                                      f"{group[0].uid!r}) have no 'answers' field and no official annotation file")
            continue
        path = vqa_dir / OFFICIAL_ANNOTATIONS[folder]
        if not path.is_file():
            if required:
                raise MissingFileError(f"{path}: official annotations needed for the human answers of "
                                       f"{len(group)} question(s) on {folder} images")
            logger.info("%s absent: %d question(s) get no human answers (no official VQA accuracy)",
                        path, len(group))
            continue
        answers = {str(qid): truth["answers"] for qid, truth in load_vqa_ground_truth(path).items()}
        for sample in group:
            if str(sample.uid) not in answers:
                raise DataFormatError(f"{path}: no annotation for question_id {sample.uid!r}")
            sample.meta["answers"] = answers[str(sample.uid)]


@TASK_READERS.register("vqa_v2")
def read_vqa_v2(data_dir: str | Path, split: str, media_root: str | Path | None = None,
                human_answers: bool | None = None) -> TaskSplit:
    """VQA v2 questions of one VL-T5 split (any `vqa/<split>.json`; usual ones in VQA_SPLITS).

    human_answers: None attaches them when the official files are present, True requires them,
    False never reads them.
    """
    data_dir = Path(data_dir)
    path = annotation_path(data_dir / "vqa" / f"{split}.json", split, VQA_SPLITS)
    root = Path(media_root) if media_root else data_dir / "COCO" / "images"
    lookup = MediaLookup(root)
    samples = []
    for index, entry in enumerate(entry_list(load_json(path), path)):
        where = location(path, index, entry, "question_id")
        img_id = str(require(entry, "img_id", (str, int), where))
        media = lookup.find(image_candidates(img_id))
        samples.append(qa_sample(entry, where, media, {"image_id": coco_image_path(img_id)[1]}))
    if human_answers is not False:
        attach_human_answers(samples, data_dir / "vqa", human_answers)
    return TaskSplit(task="vqa_v2", split=split, kind="qa", modality="image", media_root=root,
                     annotation_file=path, samples=samples, media_rule=VQA_MEDIA_RULE)
