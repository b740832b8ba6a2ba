"""A two-image task in chat rows, answerable only from both images, built from a synthetic image data set.

Each row shows two scenes and asks for the colour of one and the shape of the other; the answer is written
as the captions write a scene, colour then shape ("red circle"):

    {"id": "train17", "images": ["train2014/A.jpg", "train2014/B.jpg"],
     "messages": [{"role": "user", "content": "what colour is <image> and what shape is <image>?"},
                  {"role": "assistant", "content": "red circle"}],
     "meta": {"question_type": "colour_then_shape"}}

Which image gives the colour alternates (`colour_then_shape` / `shape_then_colour`), so a model must read
the question to know which image to look at; with the first image alone it can get one attribute right.
Rows go to `<out>/{train,test}.jsonl`; the images stay where the image data set put them (media root:
its `COCO/images`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from epalm.common.atomic_io import write_text_atomic

QUESTIONS = {
    "colour_then_shape": "what colour is <image> and what shape is <image>?",
    "shape_then_colour": "what shape is <image> and what colour is <image>?",
}


def _scenes(image_root: Path, split: str) -> list[tuple[str, dict]]:
    data = json.loads((image_root / "COCO" / "dataset_coco.json").read_text())
    splits = {"train": ("train", "restval")}.get(split, (split,))
    return [(f"{image['filepath']}/{image['filename']}", image["attributes"])
            for image in data["images"] if image["split"] in splits]


def pair_rows(scenes: list[tuple[str, dict]], count: int, rng: random.Random, prefix: str) -> list[dict]:
    rows = []
    for k in range(count):
        (first, a), (second, b) = rng.sample(scenes, 2)
        kind = "colour_then_shape" if k % 2 == 0 else "shape_then_colour"
        colour, shape = (a["colour"], b["shape"]) if kind == "colour_then_shape" else (b["colour"], a["shape"])
        rows.append({"id": f"{prefix}{k}", "images": [first, second],
                     "messages": [{"role": "user", "content": QUESTIONS[kind]},
                                  {"role": "assistant", "content": f"{colour} {shape}"}],
                     "meta": {"question_type": kind}})
    return rows


def build_image_pairs(image_root: str | Path, out_dir: str | Path, seed: int = 0, n_train: int = 6000,
                      n_test: int = 400) -> Path:
    """Rows from the train and test scenes of the image data set at `image_root` (built already); seeded."""
    image_root, out_dir = Path(image_root), Path(out_dir)
    rng = random.Random(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        rows = pair_rows(_scenes(image_root, split), count, rng, split)
        write_text_atomic(out_dir / f"{split}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    return out_dir
