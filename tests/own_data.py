"""A newcomer's own data set: real photographs of every kind (tests/real_photos.py) with hand-written captions and
questions, in the COCO Karpathy and VQA v2 layouts of docs/datasets.md, as a user writes them (no `filepath`, img_ids
without extensions, PNG files)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.real_photos import Photo, build_photo_set

# photo name -> (file name, split, caption, what is it, in colour?)
CATALOGUE = {
    "rgb_jpeg": ("rocket.jpg", "train", "a white rocket on its launch pad under a blue sky", "rocket", "yes"),
    "gray_jpeg": ("camera.jpg", "train", "a man in a coat with a camera on a tripod", "camera", "no"),
    "cmyk_jpeg": ("coffee_cmyk.jpg", "train", "a cup of coffee on a saucer", "coffee", "yes"),
    "rgba_png": ("astronaut.png", "train", "an astronaut in a white suit in front of a flag", "astronaut", "yes"),
    "palette_png": ("cat.png", "train", "a tabby cat looking up", "cat", "yes"),
    "bilevel_png": ("camera_1bit.png", "train", "a man with a camera in black and white dots", "camera", "no"),
    "la_png": ("moon_la.png", "train", "the grey cratered surface of the moon", "moon", "no"),
    "strip": ("rocket_strip.jpg", "train", "a thin strip of a rocket and the sky", "rocket", "yes"),
    "moon16": ("moon16.png", "test", "the grey cratered surface of the moon", "moon", "no"),
    "moon8": ("moon.png", "test", "the grey cratered surface of the moon", "moon", "no"),
    "tiny": ("cat_16x16.png", "test", "a tiny picture of a tabby cat", "cat", "yes"),
    "exif6": ("phone.jpg", "test", "a cup of coffee seen from above", "coffee", "yes"),
}


def build_photos(root: Path) -> dict[str, Photo]:
    """The catalogue's photographs, small (64 px) so that a run on them takes seconds."""
    return {name: photo for name, photo in build_photo_set(root / "photos", max_side=64, broken=False).items()
            if name in CATALOGUE}


def write_caption_data(data: Path, photos: dict[str, Photo]) -> Path:
    """`data/COCO/dataset_coco.json` (entries without `filepath`) and the files in `data/COCO/images/`."""
    images = data / "COCO" / "images"
    images.mkdir(parents=True, exist_ok=True)
    entries = []
    for cocoid, (name, (file, split, caption, _, _)) in enumerate(CATALOGUE.items(), start=1):
        shutil.copy(photos[name].path, images / file)
        entries.append({"filename": file, "split": split, "cocoid": cocoid, "sentences": [{"raw": caption}]})
    (data / "COCO" / "dataset_coco.json").write_text(json.dumps({"images": entries}, indent=1))
    return data


def write_vqa_data(data: Path, photos: dict[str, Photo]) -> Path:
    """`data/vqa/{train,test}.json` with `img_id` = the file name without its extension, one `answer` each."""
    images = data / "COCO" / "images"
    images.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[dict]] = {"train": [], "test": []}
    for number, (name, (file, split, _, what, colour)) in enumerate(CATALOGUE.items()):
        shutil.copy(photos[name].path, images / file)
        img_id = file.rsplit(".", 1)[0]
        by_split[split] += [
            {"img_id": img_id, "question_id": 10 * number, "sent": "what is in the picture?", "answer": what},
            {"img_id": img_id, "question_id": 10 * number + 1, "sent": "is it in colour?", "answer": colour},
        ]
    (data / "vqa").mkdir(parents=True, exist_ok=True)
    for split, entries in by_split.items():
        (data / "vqa" / f"{split}.json").write_text(json.dumps(entries, indent=1))
    return data
