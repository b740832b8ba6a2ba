"""Build the synthetic audio data set (clips and AudioCaps caption files) deterministically from a seed.

The layout is AudioCaps' (docs/datasets.md, docs/demo_data.md), so the `audiocaps` reader loads it unchanged.
Everything goes under `<out>/audiocaps/`, so the image and video data sets can share `<out>`. No QA files:
no audio QA task is read by the trainer (the world's questions still feed the LM's text corpus).
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
from dataset.synthetic.audio_world import AudioWorld
from dataset.synthetic.build_command import build_parser

FORMAT_VERSION = 1  # bump when the files written change, so old builds are not reused
DATASET_DIR = "audiocaps"
MARKER = f"{DATASET_DIR}/BUILD_COMPLETE.json"
AUDIO_DIR = f"{DATASET_DIR}/audios"  # where the audiocaps reader looks for the `audio` paths
ANNOTATION_DIR = f"{DATASET_DIR}/annotation"
VOCABULARY_FILE = f"{ANNOTATION_DIR}/attribute_vocabulary.json"
CAPTION_FILES = {split: f"audiocaps_caption_{split}.json" for split in ("train", "val", "test")}


@dataclass(frozen=True)
class AudioBuildConfig:
    seed: int = 0
    n_train: int = 4000
    n_val: int = 400
    n_test: int = 400


@dataclass(frozen=True)
class SyntheticAudioDataset:
    """Where a build put its files (see docs/demo_data.md for each one)."""

    root: Path  # the data_dir to give the reader
    reused: bool  # True when a complete build with the same config was found and nothing was written

    @property
    def audio_root(self) -> Path:
        return self.root / AUDIO_DIR

    @property
    def annotation_dir(self) -> Path:
        return self.root / ANNOTATION_DIR

    @property
    def vocabulary_file(self) -> Path:
        return self.root / VOCABULARY_FILE


def build_audio_dataset(out_dir: str | Path, seed: int = 0, n_train: int = 4000, n_val: int = 400,
                        n_test: int = 400, progress: bool = True) -> SyntheticAudioDataset:
    config = AudioBuildConfig(seed, n_train, n_val, n_test)
    root = Path(out_dir)
    marker = root / MARKER
    expected = {"world": "audio", "format_version": FORMAT_VERSION, **asdict(config)}
    if marker.exists() and json.loads(marker.read_text()) == expected:
        return SyntheticAudioDataset(root, reused=True)

    for name in ("n_train", "n_val", "n_test"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    world = AudioWorld()
    marker.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    captions: dict[str, list[dict]] = {split: [] for split in CAPTION_FILES}
    bar = tqdm(total=n_train + n_val + n_test, desc="synthetic audio", unit="clip", disable=not progress)
    number = 0  # clips are numbered across train, val and test, so every uid is unique
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        for index in range(count):
            # One rng per clip, seeded by its place: any clip can be regenerated alone, in any order.
            rng = random.Random(f"audio-world/{seed}/{split}/{index}")
            scene = world.sample_scene(rng)
            audio = f"{split}/sound{number:06d}{world.media_extension}"  # AudioCaps keeps one folder per split
            captions[split].append({"audio": audio, "caption": world.captions(scene, rng),
                                    "attributes": world.attributes(scene)})
            with atomic_path(root / AUDIO_DIR / audio) as tmp:
                world.render(scene, rng, tmp)
            number += 1
            bar.update()
    bar.close()
    for split, name in CAPTION_FILES.items():
        write_json_atomic(root / ANNOTATION_DIR / name, captions[split])
    write_json_atomic(root / VOCABULARY_FILE, world.attribute_vocabulary())
    write_json_atomic(marker, expected)
    return SyntheticAudioDataset(root, reused=False)


EXAMPLES = """examples:
  python -m dataset.synthetic.build_audio --out data/demo      # the demo builds outputs/demo/data/audio"""


def argument_parser() -> argparse.ArgumentParser:
    return build_parser("dataset.synthetic.build_audio", __doc__, AudioBuildConfig, EXAMPLES)


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    built = build_audio_dataset(args.out, args.seed, args.n_train, args.n_val, args.n_test)
    print(f"{'reused' if built.reused else 'built'} {built.root / DATASET_DIR}")


if __name__ == "__main__":
    sys.exit(run_command(main))
