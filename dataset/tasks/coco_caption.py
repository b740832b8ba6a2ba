"""COCO captions, Karpathy split: `<data_dir>/COCO/dataset_coco.json`, images under `<data_dir>/COCO/images`.

Entries of `images[]`: `filepath` ("train2014" / "val2014"; optional), `filename`, `split` ("train", "restval",
"val", "test"; restval counts as train), `sentences[].raw`, `cocoid` (the uid, the COCO image id; or `imgid`).
The image is `<filepath>/<filename>` under the media root, `<filename>` as written without `filepath` (a COCO
name, `COCO_val2014_000000000042.jpg`, is looked for in its `val2014/` folder first); when that file is not
there, the same name with any extension (media_lookup.py).
Training splits give one Sample per caption (an epoch visits every caption, as in eP-ALM); evaluation
splits give one Sample per image with all its captions as targets (the references).
"""
from __future__ import annotations

from pathlib import Path

from epalm.common.errors import ConfigError, DataFormatError, did_you_mean
from epalm.dataset.records import Sample
from epalm.dataset.tasks.annotation_file import entry_list, load_json, location, require
from epalm.dataset.tasks.media_lookup import MediaLookup
from epalm.dataset.tasks.task_split import TASK_READERS, TaskSplit, annotation_path
from epalm.dataset.tasks.vqa_v2 import coco_image_path

COCO_SPLITS = ("train", "val", "test")
_KARPATHY_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "test"}


CAPTION_MEDIA_RULE = ("an image is `<filepath>/<filename>` under the media root (`<filename>` as written when there "
                      "is no `filepath`), or the same name with any extension")


def image_candidates(image: dict, filename: str) -> list[str]:
    """Where an entry's image may be: `filepath/filename`; without `filepath`, a COCO name in its COCO folder
    (as the Karpathy files expect), then the name as written."""
    if image.get("filepath"):
        return [f"{image['filepath']}/{filename}"]
    coco_folder, _ = coco_image_path(Path(filename).stem)
    return [f"{Path(coco_folder).parent}/{filename}", filename] if "/" in coco_folder else [filename]


def _image_samples(image: dict, where: str, per_caption: bool, lookup: MediaLookup) -> list[Sample]:
    filename = require(image, "filename", str, where)
    media = lookup.find(image_candidates(image, filename))
    uid = require(image, "cocoid" if "cocoid" in image else "imgid", (int, str), where)
    sentences = require(image, "sentences", list, where)
    if not sentences:
        raise DataFormatError(f"{where}: field 'sentences' is empty (expected at least one caption)")
    captions = [require(sentence, "raw", str, f"{where}: sentence {k}").strip() for k, sentence in enumerate(sentences)]
    meta = {key: value for key, value in image.items() if key != "sentences"} | {"image_id": uid}
    if not per_caption:
        return [Sample(uid=uid, media=media, prompt="", targets=captions, meta=meta)]
    return [Sample(uid=uid, media=media, prompt="", targets=[caption],
                   meta=meta | {"caption_index": k, "sentid": sentences[k].get("sentid")})
            for k, caption in enumerate(captions)]


@TASK_READERS.register("coco_caption")
def read_coco_caption(data_dir: str | Path, split: str, media_root: str | Path | None = None,
                      per_caption: bool | None = None) -> TaskSplit:
    """Images of one Karpathy split ("train", "val", "test"; "karpathy_test" etc. also accepted).

    per_caption: one Sample per caption (default for train) or per image (default otherwise).
    """
    data_dir = Path(data_dir)
    wanted = split.rsplit("_", 1)[-1]
    if wanted not in COCO_SPLITS:
        raise ConfigError(f"coco_caption: unknown split {split!r}{did_you_mean(split, COCO_SPLITS)}; expected one of "
                          f"{COCO_SPLITS} (or karpathy_train, karpathy_val, karpathy_test)")
    per_caption = wanted == "train" if per_caption is None else per_caption
    path = annotation_path(data_dir / "COCO" / "dataset_coco.json", split, COCO_SPLITS)
    root = Path(media_root) if media_root else data_dir / "COCO" / "images"
    lookup = MediaLookup(root)
    samples = []
    for index, image in enumerate(entry_list(load_json(path), path, "images")):
        where = location(path, index, image, "cocoid")
        image_split = require(image, "split", str, where)
        if image_split not in _KARPATHY_SPLIT:
            raise DataFormatError(f"{where}: field 'split' is {image_split!r}; expected one of "
                                  f"{tuple(_KARPATHY_SPLIT)}")
        if _KARPATHY_SPLIT[image_split] == wanted:
            samples.extend(_image_samples(image, where, per_caption, lookup))
    return TaskSplit(task="coco_caption", split=wanted, kind="caption", modality="image", media_root=root,
                     annotation_file=path, samples=samples, media_rule=CAPTION_MEDIA_RULE)
