"""Build the synthetic image data set (images, VQA v2 and COCO caption files) deterministically from a seed.

The layout is the real data sets' (docs/demo_data.md), so the real VQA v2 and COCO readers load it unchanged.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from epalm.common.atomic_io import atomic_path, write_json_atomic
from epalm.common.command_line import run_command
from epalm.common.errors import ConfigError
from epalm.demo.synthetic.build_command import build_parser
from epalm.demo.synthetic.coco_format import caption_ground_truth, karpathy_coco
from epalm.demo.synthetic.image_world import ImageWorld
from epalm.demo.synthetic.items import SceneItem
from epalm.demo.synthetic.vqa_format import (answer_vocabulary, karpathy_entries, official_annotations,
                                          official_questions)

FORMAT_VERSION = 1  # bump when the files written change, so old builds are not reused
MARKER = "BUILD_COMPLETE.json"
IMAGE_DIR = "COCO/images"  # where the VQA v2 and COCO readers look for images under their data_dir


@dataclass(frozen=True)
class ImageBuildConfig:
    seed: int = 0
    n_train: int = 6000
    n_val: int = 400
    n_test: int = 400
    questions_per_image: int = 3


@dataclass(frozen=True)
class SyntheticImageDataset:
    """Where a build put its files (see docs/demo_data.md for each one)."""

    root: Path
    reused: bool  # True when a complete build with the same config was found and nothing was written

    @property
    def image_root(self) -> Path:
        return self.root / IMAGE_DIR

    @property
    def vqa_dir(self) -> Path:
        return self.root / "vqa"

    @property
    def coco_dir(self) -> Path:
        return self.root / "COCO"


def build_image_dataset(out_dir: str | Path, seed: int = 0, n_train: int = 6000, n_val: int = 400,
                        n_test: int = 400, questions_per_image: int = 3,
                        progress: bool = True) -> SyntheticImageDataset:
    config = ImageBuildConfig(seed, n_train, n_val, n_test, questions_per_image)
    root = Path(out_dir)
    marker = root / MARKER
    expected = {"world": "image", "format_version": FORMAT_VERSION, **asdict(config)}
    if marker.exists() and json.loads(marker.read_text()) == expected:
        return SyntheticImageDataset(root, reused=True)

    world = ImageWorld()
    _check(config, world)
    marker.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    items: list[SceneItem] = []
    plan = [("train", n_train), ("val", n_val), ("test", n_test)]
    bar = tqdm(total=n_train + n_val + n_test, desc="synthetic images", unit="img", disable=not progress)
    next_cocoid = 1
    for split, count in plan:
        for index in range(count):
            # One rng per image, seeded by its place: any image can be regenerated alone, in any order.
            rng = random.Random(f"image-world/{seed}/{split}/{index}")
            scene = world.sample_scene(rng)
            item = SceneItem(split=split, cocoid=next_cocoid, captions=world.captions(scene, rng),
                             qas=rng.sample(world.questions(scene, rng), questions_per_image),
                             attributes=world.attributes(scene), extension=world.media_extension)
            with atomic_path(root / IMAGE_DIR / item.relative_path) as tmp:
                world.render(scene, rng, tmp)
            items.append(item)
            next_cocoid += 1
            bar.update()
    bar.close()
    _write_annotations(root, items, world)
    write_json_atomic(marker, expected)
    return SyntheticImageDataset(root, reused=False)


def _check(config: ImageBuildConfig, world: ImageWorld) -> None:
    for name in ("n_train", "n_val", "n_test"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    available = len(world.questions(world.sample_scene(random.Random(0)), random.Random(0)))
    if not 1 <= config.questions_per_image <= available:
        raise ConfigError(f"questions_per_image must be between 1 and {available} (the questions the image world "
                          f"asks per scene), got {config.questions_per_image}")


def _write_annotations(root: Path, items: list[SceneItem], world: ImageWorld) -> None:
    by_split = {split: [item for item in items if item.split == split] for split in ("train", "val", "test")}
    vqa = root / "vqa"
    for split, split_items in by_split.items():
        write_json_atomic(vqa / f"karpathy_{split}.json", karpathy_entries(split_items))
    write_json_atomic(vqa / "trainval_ans2label.json", answer_vocabulary(by_split["train"] + by_split["val"]))
    # Like the real release: the official val2014 files cover both Karpathy val and test questions ...
    val2014 = by_split["val"] + by_split["test"]
    write_json_atomic(vqa / "v2_OpenEnded_mscoco_val2014_questions.json", official_questions(val2014, "val2014"))
    write_json_atomic(vqa / "v2_mscoco_val2014_annotations.json", official_annotations(val2014, "val2014"))
    # ... and, for convenience, one pair per split.
    for split in ("val", "test"):
        write_json_atomic(vqa / f"karpathy_{split}_questions.json", official_questions(by_split[split], "val2014"))
        write_json_atomic(vqa / f"karpathy_{split}_annotations.json",
                          official_annotations(by_split[split], "val2014"))

    coco = root / "COCO"
    write_json_atomic(coco / "dataset_coco.json", karpathy_coco(items, world.name, world.attribute_vocabulary()))
    for split in ("val", "test"):
        write_json_atomic(coco / f"coco_karpathy_{split}_gt.json", caption_ground_truth(by_split[split], split))


EXAMPLES = """examples:
  python -m epalm.demo.synthetic.build --out data/demo_images      # the demo builds outputs/demo/data/image
  python -m epalm.demo.synthetic.build --out /tmp/tiny --n-train 48 --n-val 12 --n-test 12"""


def argument_parser() -> argparse.ArgumentParser:
    return build_parser("epalm.demo.synthetic.build", __doc__, ImageBuildConfig, EXAMPLES)


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    built = build_image_dataset(args.out, args.seed, args.n_train, args.n_val, args.n_test,
                                args.questions_per_image)
    print(f"{'reused' if built.reused else 'built'} {built.root}")


if __name__ == "__main__":
    sys.exit(run_command(main))
