"""The one builder of the synthetic *caption world* data sets (audio, sensor, video): media files and caption lists.

Every item has its own rng, seeded by its place (`<world>-world/<seed>/<split>/<index>`), so any item can be
regenerated alone, in any order. The item's scene becomes a caption entry `{<media key>: path, "caption": [...],
"attributes": {...}}` and a rendered media file. The caption files, the attribute vocabulary and, last, the
BUILD_COMPLETE marker (the world, the format version and the settings) follow: a build whose marker matches is
reused untouched, and an interrupted one has no marker, so it is redone. Where the files go: `CaptionWorldLayout`.
"""
from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tqdm import tqdm

from epalm.common.atomic_io import atomic_path, write_json_atomic
from epalm.common.errors import ConfigError
from epalm.demo.synthetic.worlds import World

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CaptionWorldLayout:
    """Where one caption world's files go; the properties are paths relative to the build's root."""

    dataset_dir: str  # everything goes under <root>/<dataset_dir>/, so several data sets can share a root
    media_folder: str  # the media files' folder under dataset_dir, where the reader looks for the entries' paths
    media_key: str  # the caption entry's key of the media path ("audio", "sensor", "video")
    media_name: str  # an item's media path under media_folder, as str.format of split and number, less extension
    caption_files: dict[str, str]  # split -> caption file name in the annotation folder
    progress_desc: str  # the progress bar's description and unit
    progress_unit: str
    format_version: int  # bump when the files written change, so old builds are not reused

    @property
    def marker(self) -> str:
        return f"{self.dataset_dir}/BUILD_COMPLETE.json"

    @property
    def media_dir(self) -> str:
        return f"{self.dataset_dir}/{self.media_folder}"

    @property
    def annotation_dir(self) -> str:
        return f"{self.dataset_dir}/annotation"

    @property
    def vocabulary_file(self) -> str:
        return f"{self.annotation_dir}/attribute_vocabulary.json"


@dataclass(frozen=True)
class CaptionWorldDataset:
    """Where a build put its files (see docs/demo_data.md for each one); each world's subclass sets `layout`."""

    layout: ClassVar[CaptionWorldLayout]
    root: Path  # the data_dir to give the reader
    reused: bool  # True when a complete build with the same config was found and nothing was written

    @property
    def media_root(self) -> Path:
        return self.root / self.layout.media_dir

    @property
    def annotation_dir(self) -> Path:
        return self.root / self.layout.annotation_dir

    @property
    def vocabulary_file(self) -> Path:
        return self.root / self.layout.vocabulary_file


class ItemHook(ABC):
    """More annotation files drawn item by item (the video world's QA files)."""

    @abstractmethod
    def add(self, split: str, media: str, scene: dict, rng: random.Random) -> None:
        """Called after the item's caption entry and before its media is rendered, with the item's own rng."""

    @abstractmethod
    def annotation_files(self) -> dict[str, Any]:
        """File name in the annotation folder -> its JSON content, once every item was added."""


Dataset = TypeVar("Dataset", bound=CaptionWorldDataset)


def build_caption_world(out_dir: str | Path, world: World, config: Any, dataset: type[Dataset], progress: bool = True,
                        hook: ItemHook | None = None) -> Dataset:
    """Build (or reuse) `world`'s data set under `out_dir` with `dataset.layout`. `config` is the world's build
    settings dataclass: `seed`, `n_train`, `n_val`, `n_test`, and any more (all of them go in the marker)."""
    layout = dataset.layout
    root = Path(out_dir)
    marker = root / layout.marker
    expected = {"world": world.name, "format_version": layout.format_version, **asdict(config)}
    if marker.exists() and json.loads(marker.read_text()) == expected:
        return dataset(root, reused=True)

    counts = {split: getattr(config, f"n_{split}") for split in SPLITS}
    for split, count in counts.items():
        if count < 1:
            raise ConfigError(f"n_{split} must be at least 1, got {count}")
    marker.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    captions: dict[str, list[dict]] = {split: [] for split in SPLITS}
    bar = tqdm(total=sum(counts.values()), desc=layout.progress_desc, unit=layout.progress_unit,
               disable=not progress)
    number = 0  # items are numbered across train, val and test, so every media path is unique
    for split, count in counts.items():
        for index in range(count):
            rng = random.Random(f"{world.name}-world/{config.seed}/{split}/{index}")
            scene = world.sample_scene(rng)
            media = layout.media_name.format(split=split, number=number) + world.media_extension
            captions[split].append({layout.media_key: media, "caption": world.captions(scene, rng),
                                    "attributes": world.attributes(scene)})
            if hook is not None:
                hook.add(split, media, scene, rng)
            with atomic_path(root / layout.media_dir / media) as tmp:
                world.render(scene, rng, tmp)
            number += 1
            bar.update()
    bar.close()
    for split, name in layout.caption_files.items():
        write_json_atomic(root / layout.annotation_dir / name, captions[split])
    for name, content in (hook.annotation_files() if hook is not None else {}).items():
        write_json_atomic(root / layout.annotation_dir / name, content)
    write_json_atomic(root / layout.vocabulary_file, world.attribute_vocabulary())
    write_json_atomic(marker, expected)
    return dataset(root, reused=False)
