"""A random question of a VQA-format split on disk, with its image and human answers (the REPL's `/randvqa`).

The split is read with the project's VQA v2 reader (epalm.dataset.tasks, "vqa_v2": `<data_dir>/vqa/<split>.json`,
images under `<data_dir>/COCO/images` unless a media root is given); the demo's image data works
(`python -m epalm.demo` writes it under `outputs/demo/data/image`).
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from epalm.common.errors import DataFormatError, MissingFileError
from epalm.dataset.tasks import TASK_READERS, TaskSplit


@dataclass(frozen=True)
class VQAQuestion:
    uid: object
    question: str
    image: Path
    answers: list[str]  # the ten human answers when the split has them (human), else its scored labels
    human: bool

    def answer_counts(self) -> str:
        return ", ".join(f"{answer} ({count})" for answer, count in Counter(self.answers).most_common())


class RandomVQA:
    """Draws questions of one split, read on the first draw (a missing file is reported then)."""

    def __init__(self, data_dir: str | Path, split: str, media_root: str | Path | None = None,
                 seed: int | None = None):
        self.data_dir, self.split_name, self.media_root = Path(data_dir), split, media_root
        self.rng = random.Random(seed)
        self._split: TaskSplit | None = None

    def split(self) -> TaskSplit:
        if self._split is None:
            if not self.data_dir.is_dir():
                raise MissingFileError(f"--data_dir {self.data_dir}: no such folder (a VQA-format data folder, "
                                       "e.g. outputs/demo/data/image)")
            options = {"media_root": self.media_root} if self.media_root else {}
            try:
                split = TASK_READERS.build("vqa_v2", self.data_dir, self.split_name, **options)
            except FileNotFoundError as error:
                raise MissingFileError(str(error)) from None
            except ValueError as error:
                raise DataFormatError(str(error)) from None
            if not split.samples:
                raise DataFormatError(f"{split.annotation_file}: split '{self.split_name}' has no question")
            self._split = split
        return self._split

    def draw(self) -> VQAQuestion:
        split = self.split()
        sample = self.rng.choice(split.samples)
        answers = sample.meta.get("answers")
        if answers:
            return VQAQuestion(sample.uid, sample.prompt, split.media_path(sample),
                               [a["answer"] if isinstance(a, dict) else str(a) for a in answers], human=True)
        return VQAQuestion(sample.uid, sample.prompt, split.media_path(sample), list(sample.targets), human=False)
