"""Build the synthetic video data set (clips, MSR-VTT caption and MSRVTT-QA files) deterministically from a seed.

The layout is the real data sets' (docs/datasets.md, docs/demo_data.md), so the `msrvtt_caption` and
`video_qa` readers load it unchanged. Everything goes under `<out>/MSRVTT/`, so the image and audio data
sets can share `<out>`.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from models.atomic_io import atomic_path, write_json_atomic
from models.user_errors import ConfigError
from training.command_line import run_command
from dataset.synthetic.build_command import build_parser
from dataset.synthetic.video_world import VideoWorld

FORMAT_VERSION = 1  # bump when the files written change, so old builds are not reused
DATASET_DIR = "MSRVTT"
MARKER = f"{DATASET_DIR}/BUILD_COMPLETE.json"
VIDEO_DIR = f"{DATASET_DIR}/videos/all"  # where both readers look for videos under their data_dir
ANNOTATION_DIR = f"{DATASET_DIR}/annotation"
VOCABULARY_FILE = f"{ANNOTATION_DIR}/attribute_vocabulary.json"
# MSR-VTT's caption files are named train7k / test; a val file is added (the reader takes any split name).
CAPTION_FILES = {"train": "msrvtt_caption_train7k.json", "val": "msrvtt_caption_val.json",
                 "test": "msrvtt_caption_test.json"}
QA_FILES = {split: f"msrvtt_vqa_{split}.json" for split in ("train", "val", "test")}


@dataclass(frozen=True)
class VideoBuildConfig:
    seed: int = 0
    n_train: int = 4000
    n_val: int = 400
    n_test: int = 400
    questions_per_video: int = 3


@dataclass(frozen=True)
class SyntheticVideoDataset:
    """Where a build put its files (see docs/demo_data.md for each one)."""

    root: Path  # the data_dir to give the readers
    reused: bool  # True when a complete build with the same config was found and nothing was written

    @property
    def video_root(self) -> Path:
        return self.root / VIDEO_DIR

    @property
    def annotation_dir(self) -> Path:
        return self.root / ANNOTATION_DIR

    @property
    def vocabulary_file(self) -> Path:
        return self.root / VOCABULARY_FILE


def build_video_dataset(out_dir: str | Path, seed: int = 0, n_train: int = 4000, n_val: int = 400,
                        n_test: int = 400, questions_per_video: int = 3,
                        progress: bool = True) -> SyntheticVideoDataset:
    config = VideoBuildConfig(seed, n_train, n_val, n_test, questions_per_video)
    root = Path(out_dir)
    marker = root / MARKER
    expected = {"world": "video", "format_version": FORMAT_VERSION, **asdict(config)}
    if marker.exists() and json.loads(marker.read_text()) == expected:
        return SyntheticVideoDataset(root, reused=True)

    world = VideoWorld()
    _check(config, world)
    marker.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    captions: dict[str, list[dict]] = {split: [] for split in CAPTION_FILES}
    questions: dict[str, list[dict]] = {split: [] for split in QA_FILES}
    bar = tqdm(total=n_train + n_val + n_test, desc="synthetic videos", unit="clip", disable=not progress)
    number = 0  # MSR-VTT numbers its clips video0 ... across train, val and test
    question_id = 1  # numbered across all splits, as MSRVTT-QA does, from 1 so no id reads as false
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        for index in range(count):
            # One rng per clip, seeded by its place: any clip can be regenerated alone, in any order.
            rng = random.Random(f"video-world/{seed}/{split}/{index}")
            scene = world.sample_scene(rng)
            video = f"video{number}{world.media_extension}"
            captions[split].append({"video": video, "caption": world.captions(scene, rng),
                                    "attributes": world.attributes(scene)})
            for qa in rng.sample(world.questions(scene, rng), questions_per_video):
                questions[split].append({"video": video, "question_id": question_id, "question": qa.question,
                                         "answer": qa.answer, "answer_type": qa.answer_type,
                                         "question_type": qa.question_type})
                question_id += 1
            with atomic_path(root / VIDEO_DIR / video) as tmp:
                world.render(scene, rng, tmp)
            number += 1
            bar.update()
    bar.close()
    for split in CAPTION_FILES:
        write_json_atomic(root / ANNOTATION_DIR / CAPTION_FILES[split], captions[split])
        write_json_atomic(root / ANNOTATION_DIR / QA_FILES[split], questions[split])
    write_json_atomic(root / VOCABULARY_FILE, world.attribute_vocabulary())
    write_json_atomic(marker, expected)
    return SyntheticVideoDataset(root, reused=False)


def _check(config: VideoBuildConfig, world: VideoWorld) -> None:
    for name in ("n_train", "n_val", "n_test"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    available = len(world.questions(world.sample_scene(random.Random(0)), random.Random(0)))
    if not 1 <= config.questions_per_video <= available:
        raise ConfigError(f"questions_per_video must be between 1 and {available} (the questions the video world "
                          f"asks per clip), got {config.questions_per_video}")


EXAMPLES = """examples:
  python -m dataset.synthetic.build_video --out data/demo      # the demo builds outputs/demo/data/video"""


def argument_parser() -> argparse.ArgumentParser:
    return build_parser("dataset.synthetic.build_video", __doc__, VideoBuildConfig, EXAMPLES)


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    built = build_video_dataset(args.out, args.seed, args.n_train, args.n_val, args.n_test, args.questions_per_video)
    print(f"{'reused' if built.reused else 'built'} {built.root / DATASET_DIR}")


if __name__ == "__main__":
    sys.exit(run_command(main))
