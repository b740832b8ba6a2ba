"""A look at every media file of a split before anything is trained: which are missing or unreadable (and why),
and which images are not square.

Each file is probed by its modality plugin (`Modality.probe`: an image's header, about 30 us; other modalities:
the file exists and is not empty), or, for the check-data command, decoded whole too, which also
catches a file truncated after its header (`decode_with`). Media are named by their path relative to the split's
media root.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

from epalm.common.errors import MediaDecodeError
from epalm.dataset.records import media_items
from epalm.dataset.tasks.task_split import TaskSplit
from epalm.models.encoders.config import EncoderConfig
from epalm.models.modalities import get_modality
from epalm.models.modalities.base import FILE_NOT_FOUND

SHOWN = 3  # failures and examples a console line names


@dataclass
class MediaSurvey:
    """files: modality -> the split's distinct media paths; failures: path -> reason; sizes: path -> (w, h) of the
    media that have a pixel size (images)."""

    split: TaskSplit
    files: dict[str, list[str]]
    failures: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(paths) for paths in self.files.values())

    def not_square(self) -> list[str]:
        """Paths of the images whose width and height differ, the most elongated first."""
        odd = [path for path, (w, h) in self.sizes.items() if w != h]
        return sorted(odd, key=lambda path: -max(self.sizes[path]) / max(1, min(self.sizes[path])))

    def usable(self, sample) -> bool:
        return not any(item.path in self.failures for item in media_items(sample, self.split.modality))

    def failure_lines(self, shown: int = SHOWN) -> list[str]:
        """`<media root>/<path>: <reason>` of the first failures."""
        return [f"{self.split.media_root / path}: {reason}" for path, reason in list(self.failures.items())[:shown]]

    def failure_summary(self) -> str:
        """'2 of 18 media files cannot be read (missing 2): path: reason; ... (how paths are formed)'."""
        missing = sum(reason == FILE_NOT_FOUND for reason in self.failures.values())
        kinds = ", ".join(part for part in (f"missing {missing}" if missing else "",
                                            f"unreadable {len(self.failures) - missing}"
                                            if len(self.failures) > missing else "") if part)
        more = f"; and {len(self.failures) - SHOWN} more" if len(self.failures) > SHOWN else ""
        rule = f" ({self.split.media_rule})" if missing and self.split.media_rule else ""
        return (f"{len(self.failures)} of {self.total} media files cannot be read ({kinds}): "
                f"{'; '.join(self.failure_lines())}{more}{rule}")

    def shape_summary(self) -> str:
        """'not square: 3 of 10 images (most elongated: a.jpg 2000x50, b.png 16x9)', or ''."""
        odd = self.not_square()
        if not odd:
            return ""
        examples = ", ".join(f"{path} {self.sizes[path][0]}x{self.sizes[path][1]}" for path in odd[:SHOWN])
        return f"not square: {len(odd)} of {len(self.sizes)} images (most elongated: {examples})"


def split_media(split: TaskSplit) -> dict[str, list[str]]:
    """modality -> the split's distinct media paths of that modality."""
    found: dict[str, set[str]] = {}
    for sample in split:
        for item in media_items(sample, split.modality):
            found.setdefault(item.modality, set()).add(item.path)
    return {modality: sorted(paths) for modality, paths in found.items()}


def survey_split(split: TaskSplit, decode_with: dict[str, EncoderConfig] | None = None,
                 show_progress: bool = True) -> MediaSurvey:
    """Probe every distinct media file of the split once; with `decode_with` ({modality: encoder section}, the
    decoder's settings: frames, sample rate), also decode it whole."""
    survey = MediaSurvey(split, split_media(split))
    todo = [(modality, path) for modality, paths in survey.files.items() for path in paths]
    for modality, path in tqdm(todo, desc=f"checking the media of {split.split}", leave=False,
                               disable=not show_progress or len(todo) < 2000):
        plugin = get_modality(modality)
        full = str(split.media_root / path)
        try:
            size = plugin.probe(full)
            if decode_with is not None:
                plugin.decode(full, False, None, decode_with.get(modality) or EncoderConfig())
        except MediaDecodeError as error:
            survey.failures[path] = error.reason
            continue
        if size is not None:
            survey.sizes[path] = size
    return survey
