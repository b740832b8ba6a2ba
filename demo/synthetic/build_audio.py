"""Build the synthetic audio data set (clips and AudioCaps caption files) deterministically from a seed.

The layout is AudioCaps' (docs/datasets.md, docs/demo_data.md), so the `audiocaps` reader loads it unchanged.
Everything goes under `<out>/audiocaps/`, so the image and video data sets can share `<out>`. No QA files:
no audio QA task is read by the trainer (the world's questions still feed the LM's text corpus).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from epalm.common.command_line import run_command
from epalm.demo.synthetic.audio_world import AudioWorld
from epalm.demo.synthetic.build_command import build_parser
from epalm.demo.synthetic.caption_world_build import SPLITS, CaptionWorldDataset, CaptionWorldLayout, build_caption_world

FORMAT_VERSION = 1  # bump when the files written change, so old builds are not reused
LAYOUT = CaptionWorldLayout(
    dataset_dir="audiocaps", media_folder="audios", media_key="audio",
    media_name="{split}/sound{number:06d}",  # AudioCaps keeps one folder per split
    caption_files={split: f"audiocaps_caption_{split}.json" for split in SPLITS},
    progress_desc="synthetic audio", progress_unit="clip", format_version=FORMAT_VERSION)
DATASET_DIR = LAYOUT.dataset_dir
MARKER = LAYOUT.marker
AUDIO_DIR = LAYOUT.media_dir  # where the audiocaps reader looks for the `audio` paths
VOCABULARY_FILE = LAYOUT.vocabulary_file
CAPTION_FILES = LAYOUT.caption_files


@dataclass(frozen=True)
class AudioBuildConfig:
    seed: int = 0
    n_train: int = 4000
    n_val: int = 400
    n_test: int = 400


class SyntheticAudioDataset(CaptionWorldDataset):
    layout = LAYOUT

    @property
    def audio_root(self) -> Path:
        return self.media_root


def build_audio_dataset(out_dir: str | Path, seed: int = 0, n_train: int = 4000, n_val: int = 400,
                        n_test: int = 400, progress: bool = True) -> SyntheticAudioDataset:
    config = AudioBuildConfig(seed, n_train, n_val, n_test)
    return build_caption_world(out_dir, AudioWorld(), config, SyntheticAudioDataset, progress)


EXAMPLES = """examples:
  python -m epalm.demo.synthetic.build_audio --out data/demo      # the demo builds outputs/demo/data/audio"""


def argument_parser() -> argparse.ArgumentParser:
    return build_parser("epalm.demo.synthetic.build_audio", __doc__, AudioBuildConfig, EXAMPLES)


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    built = build_audio_dataset(args.out, args.seed, args.n_train, args.n_val, args.n_test)
    print(f"{'reused' if built.reused else 'built'} {built.root / DATASET_DIR}")


if __name__ == "__main__":
    sys.exit(run_command(main))
