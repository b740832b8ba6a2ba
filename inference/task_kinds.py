"""What a trained model answers: the kind of task its run trained on, by task reader, and (a joint run) which of
its tasks read a modality.

A reader's kind (qa, caption, chat) is known once it has read a split (dataset/tasks: `TaskSplit.kind`); a
loaded model has no data to read, so the project's readers are listed here with their kind and modality
(tests/test_inference_api.py checks that every registered reader is). A plugin reader not listed is a caption
task when its name says so, a QA task otherwise.
"""
from __future__ import annotations

from dataclasses import replace

from epalm.training.run_config import RunConfig

READERS: dict[str, tuple[str, str | None]] = {
    "vqa_v2": ("qa", "image"), "gqa": ("qa", "image"), "coco_caption": ("caption", "image"),
    "video_qa": ("qa", "video"), "msrvtt_qa": ("qa", "video"), "msvd_qa": ("qa", "video"),
    "msrvtt_caption": ("caption", "video"), "audiocaps": ("caption", "audio"),
    "sensor_caption": ("caption", "sensor"), "chat": ("chat", None),
}


def task_kind(reader: str) -> str:
    """"qa", "caption" or "chat"."""
    if reader in READERS:
        return READERS[reader][0]
    return "caption" if "caption" in reader.lower() else "qa"


def task_config_for(cfg: RunConfig, modality: str | None) -> RunConfig:
    """`cfg` with the task section a joint run (`mixture`) trained `modality` on; `cfg` itself otherwise."""
    if not cfg.mixture:
        return cfg
    entries = [entry.task for entry in cfg.mixture.values()]
    reading = [task for task in entries if READERS.get(task.reader, (None, None))[1] == modality]
    return replace(cfg, task=(reading or entries)[0])
