"""Build the synthetic video data set (clips, MSR-VTT caption and MSRVTT-QA files) deterministically from a seed.

The layout is the real data sets' (docs/datasets.md, docs/demo_data.md), so the `msrvtt_caption` and
`video_qa` readers load it unchanged. Everything goes under `<out>/MSRVTT/`, so the image and audio data
sets can share `<out>`.
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from epalm.common.command_line import run_command
from epalm.common.errors import ConfigError
from epalm.demo.synthetic.build_command import build_parser
from epalm.demo.synthetic.caption_world_build import (SPLITS, CaptionWorldDataset, CaptionWorldLayout, ItemHook,
                                                   build_caption_world)
from epalm.demo.synthetic.video_world import VideoWorld

FORMAT_VERSION = 1  # bump when the files written change, so old builds are not reused
LAYOUT = CaptionWorldLayout(
    dataset_dir="MSRVTT", media_folder="videos/all", media_key="video",
    media_name="video{number}",  # MSR-VTT numbers its clips video0 ... across train, val and test
    # MSR-VTT's caption files are named train7k / test; a val file is added (the reader takes any split name).
    caption_files={"train": "msrvtt_caption_train7k.json", "val": "msrvtt_caption_val.json",
                   "test": "msrvtt_caption_test.json"},
    progress_desc="synthetic videos", progress_unit="clip", format_version=FORMAT_VERSION)
DATASET_DIR = LAYOUT.dataset_dir
MARKER = LAYOUT.marker
VIDEO_DIR = LAYOUT.media_dir  # where both readers look for videos under their data_dir
VOCABULARY_FILE = LAYOUT.vocabulary_file
CAPTION_FILES = LAYOUT.caption_files
QA_FILES = {split: f"msrvtt_vqa_{split}.json" for split in SPLITS}


@dataclass(frozen=True)
class VideoBuildConfig:
    seed: int = 0
    n_train: int = 4000
    n_val: int = 400
    n_test: int = 400
    questions_per_video: int = 3


class SyntheticVideoDataset(CaptionWorldDataset):
    layout = LAYOUT

    @property
    def video_root(self) -> Path:
        return self.media_root


class QuestionFiles(ItemHook):
    """The MSRVTT-QA files: `per_video` of the world's questions about each clip, drawn with the clip's rng."""

    def __init__(self, world: VideoWorld, per_video: int):
        self.world, self.per_video = world, per_video
        self.entries: dict[str, list[dict]] = {split: [] for split in QA_FILES}
        self.next_id = 1  # numbered across all splits, as MSRVTT-QA does, from 1 so no id reads as false

    def add(self, split: str, media: str, scene: dict, rng: random.Random) -> None:
        for qa in rng.sample(self.world.questions(scene, rng), self.per_video):
            self.entries[split].append({"video": media, "question_id": self.next_id, "question": qa.question,
                                        "answer": qa.answer, "answer_type": qa.answer_type,
                                        "question_type": qa.question_type})
            self.next_id += 1

    def annotation_files(self) -> dict[str, list[dict]]:
        return {QA_FILES[split]: entries for split, entries in self.entries.items()}


def build_video_dataset(out_dir: str | Path, seed: int = 0, n_train: int = 4000, n_val: int = 400,
                        n_test: int = 400, questions_per_video: int = 3,
                        progress: bool = True) -> SyntheticVideoDataset:
    config = VideoBuildConfig(seed, n_train, n_val, n_test, questions_per_video)
    world = VideoWorld()
    available = len(world.questions(world.sample_scene(random.Random(0)), random.Random(0)))
    if not 1 <= questions_per_video <= available:
        raise ConfigError(f"questions_per_video must be between 1 and {available} (the questions the video world "
                          f"asks per clip), got {questions_per_video}")
    return build_caption_world(out_dir, world, config, SyntheticVideoDataset, progress,
                               hook=QuestionFiles(world, questions_per_video))


EXAMPLES = """examples:
  python -m epalm.demo.synthetic.build_video --out data/demo      # the demo builds outputs/demo/data/video"""


def argument_parser() -> argparse.ArgumentParser:
    return build_parser("epalm.demo.synthetic.build_video", __doc__, VideoBuildConfig, EXAMPLES)


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    built = build_video_dataset(args.out, args.seed, args.n_train, args.n_val, args.n_test, args.questions_per_video)
    print(f"{'reused' if built.reused else 'built'} {built.root / DATASET_DIR}")


if __name__ == "__main__":
    sys.exit(run_command(main))
