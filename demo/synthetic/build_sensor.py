"""Build the synthetic sensor data set (traces and caption files) deterministically from a seed.

AudioCaps' layout with the sensor's own names (docs/fewshot.md): `<out>/sensors/traces/<split>/trace<n>.npy`
and `<out>/sensors/annotation/sensor_caption_<split>.json`, lists of `{"sensor": path, "caption": [5 captions],
"attributes": {...}}`, read by the `sensor_caption` task reader; `attribute_vocabulary.json` beside them.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from epalm.common.command_line import run_command
from epalm.demo.synthetic.build_command import build_parser
from epalm.demo.synthetic.caption_world_build import SPLITS, CaptionWorldDataset, CaptionWorldLayout, build_caption_world
from epalm.demo.synthetic.sensor_traces import SensorWorld

FORMAT_VERSION = 2  # bump when the files written change, so old builds are not reused
LAYOUT = CaptionWorldLayout(
    dataset_dir="sensors", media_folder="traces", media_key="sensor", media_name="{split}/trace{number:06d}",
    caption_files={split: f"sensor_caption_{split}.json" for split in SPLITS},
    progress_desc="synthetic sensor traces", progress_unit="trace", format_version=FORMAT_VERSION)
DATASET_DIR = LAYOUT.dataset_dir
MARKER = LAYOUT.marker
TRACE_DIR = LAYOUT.media_dir  # where the sensor_caption reader looks for the `sensor` paths
VOCABULARY_FILE = LAYOUT.vocabulary_file
CAPTION_FILES = LAYOUT.caption_files


@dataclass(frozen=True)
class SensorBuildConfig:
    seed: int = 0
    n_train: int = 2000
    n_val: int = 300
    n_test: int = 300


class SyntheticSensorDataset(CaptionWorldDataset):
    layout = LAYOUT

    @property
    def trace_root(self) -> Path:
        return self.media_root


def build_sensor_dataset(out_dir: str | Path, seed: int = 0, n_train: int = 2000, n_val: int = 300,
                         n_test: int = 300, progress: bool = True) -> SyntheticSensorDataset:
    config = SensorBuildConfig(seed, n_train, n_val, n_test)
    return build_caption_world(out_dir, SensorWorld(), config, SyntheticSensorDataset, progress)


EXAMPLES = """examples:
  python -m epalm.demo.synthetic.build_sensor --out data/sensor
  python -m epalm.demo.synthetic.build_sensor --out data/sensor --n-train 200 --seed 1"""


def argument_parser() -> argparse.ArgumentParser:
    return build_parser("epalm.demo.synthetic.build_sensor", __doc__, SensorBuildConfig, EXAMPLES)


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    built = build_sensor_dataset(args.out, args.seed, args.n_train, args.n_val, args.n_test)
    print(f"{'reused' if built.reused else 'built'} {built.root / DATASET_DIR}")


if __name__ == "__main__":
    sys.exit(run_command(main))
