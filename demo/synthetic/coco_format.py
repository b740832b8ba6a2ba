"""COCO caption files for generated images: Karpathy's `dataset_coco.json` and COCO-format ground truth."""
from __future__ import annotations

import re
from collections.abc import Sequence

from epalm.demo.synthetic.items import SceneItem


def _tokens(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", caption.lower())


def karpathy_coco(items: Sequence[SceneItem], world: str, vocabulary: dict) -> dict:
    """Karpathy split layout; each image also carries its ground-truth `attributes` for caption scoring."""
    images, sentid = [], 0
    for imgid, item in enumerate(items):
        sentences = []
        for caption in item.captions:
            sentences.append({"raw": caption, "tokens": _tokens(caption), "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({
            "filepath": item.folder, "filename": item.filename, "imgid": imgid, "cocoid": item.cocoid,
            "split": item.split, "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
            "attributes": item.attributes,
        })
    return {"dataset": "coco", "world": world, "attribute_vocabulary": vocabulary, "images": images}


def caption_ground_truth(items: Sequence[SceneItem], split: str) -> dict:
    """COCO caption annotation layout (what pycocoevalcap's COCO API loads), keyed by `cocoid`."""
    annotations = [{"image_id": item.cocoid, "caption": caption, "id": item.cocoid * 10 + k}
                   for item in items for k, caption in enumerate(item.captions)]
    return {"info": {"description": f"synthetic image world, Karpathy {split} captions"}, "licenses": [],
            "type": "captions", "images": [{"id": item.cocoid, "file_name": item.filename} for item in items],
            "annotations": annotations}
