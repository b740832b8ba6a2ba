"""Build the synthetic sensor data set (traces and caption files) deterministically from a seed.

    python -m dataset.synthetic.build_sensor --out data/demo --seed 0

AudioCaps' layout with the sensor's own names (docs/fewshot.md): `<out>/sensors/traces/<split>/trace<n>.npy`
and `<out>/sensors/annotation/sensor_caption_<split>.json`, lists of `{"sensor": path, "caption": [5 captions],
"attributes": {...}}`, read by the `sensor_caption` task reader; `attribute_vocabulary.json` beside them.
"""
from __future__ import annotations

import argparse
import sys
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from dataset.synthetic.sensor_traces import SensorWorld
from models.atomic_io import atomic_path, write_json_atomic

FORMAT_VERSION = 2  # bump when the files written change, so old builds are not reused
DATASET_DIR = "sensors"
MARKER = f"{DATASET_DIR}/BUILD_COMPLETE.json"
TRACE_DIR = f"{DATASET_DIR}/traces"  # where the sensor_caption reader looks for the `sensor` paths
ANNOTATION_DIR = f"{DATASET_DIR}/annotation"
VOCABULARY_FILE = f"{ANNOTATION_DIR}/attribute_vocabulary.json"
CAPTION_FILES = {split: f"sensor_caption_{split}.json" for split in ("train", "val", "test")}


@dataclass(frozen=True)
class SensorBuildConfig:
    seed: int = 0
    n_train: int = 2000
    n_val: int = 300
    n_test: int = 300


@dataclass(frozen=True)
class SyntheticSensorDataset:
    """Where a build put its files."""

    root: Path  # the data_dir to give the reader
    reused: bool  # True when a complete build with the same config was found and nothing was written

    @property
    def trace_root(self) -> Path:
        return self.root / TRACE_DIR

    @property
    def annotation_dir(self) -> Path:
        return self.root / ANNOTATION_DIR

    @property
    def vocabulary_file(self) -> Path:
        return self.root / VOCABULARY_FILE


def build_sensor_dataset(out_dir: str | Path, seed: int = 0, n_train: int = 2000, n_val: int = 300,
                         n_test: int = 300, progress: bool = True) -> SyntheticSensorDataset:
    config = SensorBuildConfig(seed, n_train, n_val, n_test)
    root = Path(out_dir)
    marker = root / MARKER
    expected = {"world": "sensor", "format_version": FORMAT_VERSION, **asdict(config)}
    if marker.exists() and json.loads(marker.read_text()) == expected:
        return SyntheticSensorDataset(root, reused=True)
    for name in ("n_train", "n_val", "n_test"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    world = SensorWorld()
    marker.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    captions: dict[str, list[dict]] = {split: [] for split in CAPTION_FILES}
    bar = tqdm(total=n_train + n_val + n_test, desc="synthetic sensor traces", unit="trace", disable=not progress)
    number = 0  # traces are numbered across train, val and test, so every uid is unique
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        for index in range(count):
            # One rng per trace, seeded by its place: any trace can be regenerated alone, in any order.
            rng = random.Random(f"sensor-world/{seed}/{split}/{index}")
            scene = world.sample_scene(rng)
            trace = f"{split}/trace{number:06d}{world.media_extension}"
            captions[split].append({"sensor": trace, "caption": world.captions(scene, rng),
                                    "attributes": world.attributes(scene)})
            with atomic_path(root / TRACE_DIR / trace) as tmp:
                world.render(scene, rng, tmp)
            number += 1
            bar.update()
    bar.close()
    for split, name in CAPTION_FILES.items():
        write_json_atomic(root / ANNOTATION_DIR / name, captions[split])
    write_json_atomic(root / VOCABULARY_FILE, world.attribute_vocabulary())
    write_json_atomic(marker, expected)
    return SyntheticSensorDataset(root, reused=False)


EXAMPLES = """examples:
  python -m dataset.synthetic.build_sensor --out data/sensor
  python -m dataset.synthetic.build_sensor --out data/sensor --n-train 200 --seed 1"""


def argument_parser() -> argparse.ArgumentParser:
    from training.command_line import add_debug_flag, command_parser

    parser = command_parser("python -m dataset.synthetic.build_sensor",
                            "Build the synthetic sensor data set (the few-shot study's new modality).", EXAMPLES)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (the reader's data_dir)")
    for name, value in asdict(SensorBuildConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value, metavar="N",
                            help=f"{name.replace('_', ' ')} (default {value})")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    built = build_sensor_dataset(args.out, args.seed, args.n_train, args.n_val, args.n_test)
    print(f"{'reused' if built.reused else 'built'} {built.root / DATASET_DIR}")


if __name__ == "__main__":
    from training.command_line import run_command

    sys.exit(run_command(main))
