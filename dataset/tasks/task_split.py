"""What a task reader returns, and the registry readers are found in by name.

A reader is `reader(data_dir, split, **options) -> TaskSplit`, registered in TASK_READERS:
`TASK_READERS.build("vqa_v2", "data", "karpathy_test")`. A TaskSplit is a list of Samples (it iterates,
indexes and has a length like one) plus the folder their `Sample.media` paths are relative to.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from epalm.common.errors import MissingFileError, did_you_mean
from epalm.common.registry import Registry
from epalm.dataset.records import Sample


@dataclass
class TaskSplit:
    task: str
    split: str
    kind: Literal["qa", "caption", "chat"]
    # A registered modality plugin (models/modalities): image, video, audio ...; chat rows: their instances'
    # modalities joined with "+" (each Sample's `items` say which is which).
    modality: str
    media_root: Path
    annotation_file: Path
    samples: list[Sample]
    # How a sample's media path was formed from its entry (one line: what was looked for, for missing files).
    media_rule: str = ""

    def media_path(self, sample: Sample) -> Path:
        return self.media_root / sample.media

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


TASK_READERS: Registry[TaskSplit] = Registry("task reader")


def annotation_path(path: Path, split: str, known_splits: tuple[str, ...]) -> Path:
    """The annotation file of a split, or MissingFileError naming it and the splits the dataset has."""
    if not path.is_file():
        raise MissingFileError(f"{path}: annotation file of split '{split}' not found"
                               f"{did_you_mean(split, known_splits)} "
                               f"(this dataset's splits: {', '.join(known_splits)})")
    return path
