"""Readers of the reference annotation formats; each registers itself in TASK_READERS by name.

    from epalm.dataset.tasks import TASK_READERS
    split = TASK_READERS.build("vqa_v2", "data", "karpathy_test")   # a TaskSplit: Samples + media_root
"""
from epalm.dataset.tasks import chat_messages, coco_caption, gqa, media_captions, video_qa, vqa_v2  # noqa: F401
from epalm.dataset.tasks.task_split import TASK_READERS, TaskSplit

__all__ = ["TASK_READERS", "TaskSplit"]
