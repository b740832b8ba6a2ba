"""One generated image with its text, named the way COCO / VQA v2 name theirs so the real readers load it.

Train images go to COCO's `train2014` folder, val and test to `val2014` (as the Karpathy split draws its val and
test images from COCO val2014). A VL-T5 VQA `img_id` maps to its file as
`COCO_val2014_000000000042` -> `<image_root>/val2014/COCO_val2014_000000000042.jpg`.
"""
from __future__ import annotations

from dataclasses import dataclass

from epalm.demo.synthetic.worlds import QA

SPLIT_FOLDERS = {"train": "train2014", "val": "val2014", "test": "val2014"}


def img_id(folder: str, cocoid: int) -> str:
    return f"COCO_{folder}_{cocoid:012d}"


def media_path_from_img_id(vqa_img_id: str, extension: str = ".jpg") -> str:
    """`COCO_val2014_000000000042` -> `val2014/COCO_val2014_000000000042.jpg` (relative to the image root)."""
    parts = vqa_img_id.split("_")
    if len(parts) != 3 or parts[0] != "COCO":
        raise ValueError(f"img_id {vqa_img_id!r} is not of the form COCO_<folder>_<12 digits>")
    return f"{parts[1]}/{vqa_img_id}{extension}"


@dataclass
class SceneItem:
    split: str  # train | val | test
    cocoid: int
    captions: list[str]
    qas: list[QA]
    attributes: dict[str, str]
    extension: str = ".jpg"

    @property
    def folder(self) -> str:
        return SPLIT_FOLDERS[self.split]

    @property
    def img_id(self) -> str:
        return img_id(self.folder, self.cocoid)

    @property
    def filename(self) -> str:
        return self.img_id + self.extension

    @property
    def relative_path(self) -> str:
        return f"{self.folder}/{self.filename}"

    def question_id(self, index: int) -> int:
        # VQA v2 numbers questions image_id * 1000 + k.
        return self.cocoid * 1000 + index
