"""Captions of videos (MSR-VTT), sounds (AudioCaps) and sensor traces (the synthetic sensor data set of
demo/synthetic/build_sensor.py): lists of `{<media key>, caption}` entries.

`caption` is a string or a list of strings; a file may list a clip once with all its captions or once
per caption. Training splits give one Sample per caption; evaluation splits one Sample per clip with all
its captions (entries of the same clip merged, in file order; meta from its first entry).
uid = the media path without its extension (as eP-ALM names clips).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path, PurePosixPath

from epalm.common.errors import DataFormatError
from epalm.dataset.records import Sample
from epalm.dataset.tasks.annotation_file import entry_list, load_json, location, require
from epalm.dataset.tasks.task_split import TASK_READERS, TaskSplit, annotation_path


def _captions(entry: dict, where: str) -> list[str]:
    caption = require(entry, "caption", (str, list), where)
    captions = [caption] if isinstance(caption, str) else caption
    if not captions or not all(isinstance(text, str) for text in captions):
        raise DataFormatError(f"{where}: field 'caption' must be a string or a non-empty list of strings")
    return [text.strip() for text in captions]


def read_media_captions(path: Path, media_key: str, per_caption: bool) -> list[Sample]:
    """Samples of one caption file (see the module docstring)."""
    clips: dict[str, Sample] = {}
    samples = []
    for index, entry in enumerate(entry_list(load_json(path), path)):
        where = location(path, index, entry, media_key)
        media = require(entry, media_key, str, where)
        captions = _captions(entry, where)
        uid = str(PurePosixPath(media).with_suffix(""))
        meta = {key: value for key, value in entry.items() if key != "caption"}
        if per_caption:
            samples.extend(Sample(uid=uid, media=media, prompt="", targets=[text], meta=meta) for text in captions)
        elif uid in clips:
            clips[uid].targets.extend(captions)
        else:
            clips[uid] = Sample(uid=uid, media=media, prompt="", targets=captions, meta=meta)
    return samples if per_caption else list(clips.values())


def _read(data_dir: str | Path, split: str, *, task: str, folder: str, file_prefix: str, media_key: str,
          media_folder: str, modality: str, splits: tuple[str, ...], aliases: dict[str, str],
          media_root: str | Path | None = None, per_caption: bool | None = None) -> TaskSplit:
    root = Path(data_dir) / folder
    file_split = aliases.get(split, split)
    path = annotation_path(root / "annotation" / f"{file_prefix}_{file_split}.json", split, splits)
    per_caption = "train" in file_split if per_caption is None else per_caption
    return TaskSplit(task=task, split=file_split, kind="caption", modality=modality,
                     media_root=Path(media_root) if media_root else root / media_folder,
                     annotation_file=path, samples=read_media_captions(path, media_key, per_caption))


read_msrvtt_caption = TASK_READERS.register("msrvtt_caption")(partial(
    _read, task="msrvtt_caption", folder="MSRVTT", file_prefix="msrvtt_caption", media_key="video",
    media_folder="videos/all", modality="video", splits=("train7k", "test"), aliases={"train": "train7k"}))
read_audiocaps = TASK_READERS.register("audiocaps")(partial(
    _read, task="audiocaps", folder="audiocaps", file_prefix="audiocaps_caption", media_key="audio",
    media_folder="audios", modality="audio", splits=("train", "val", "test"), aliases={}))
read_sensor_caption = TASK_READERS.register("sensor_caption")(partial(
    _read, task="sensor_caption", folder="sensors", file_prefix="sensor_caption", media_key="sensor",
    media_folder="traces", modality="sensor", splits=("train", "val", "test"), aliases={}))
