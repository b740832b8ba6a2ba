"""Pretrain the demo's tiny sensor encoder from scratch on a sensor-only task: classify the sensor world's attributes.

    python -m epalm.demo.pretraining --only sensor [--force]

The sensor modality (models/modalities/sensor.py) is the few-shot study's new modality (docs/fewshot.md): its
encoder, like the other demo encoders, is pretrained on its own media alone, here on attribute classification
from the final CLS. Traces are rendered by the sensor world from a stream of their own
(`demo-sensor-pretraining/<seed>/<split>/<index>`, never the data set's `sensor-world/...` traces), written as
`.npy`, decoded by the plugin's `load_sensor_trace` and normalised ONCE by the encoder's own test-time transform,
with per-channel statistics measured on a separate stream. Training, evaluation and saving follow the AST's.
"""
from __future__ import annotations

import random
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from epalm.demo.pretraining.folders import atomic_folder, read_json, write_json
from epalm.demo.pretraining.head_training import AttributeHeads, BatchMaker, HeadTraining, Labels, pretrain_heads
from epalm.demo.pretraining.settings import ENCODER_FILE, REPORT_FILE
from epalm.demo.pretraining.shipped import DEFAULT_OUT
from epalm.demo.pretraining.timing import Timer
from epalm.demo.pretraining.video_encoder import (MediaPool, attribute_classes, cls_features, file_sizes,
                                                     head_accuracy, label_tensors, linear_probe, loss_summary,
                                                     repo_relative, torch_threads)
from epalm.demo.synthetic.sensor_traces import CHANNELS, LENGTH, SensorWorld
from epalm.models.encoders import EncoderConfig, build_encoder
from epalm.models.modalities.sensor import SensorEncoder, SensorEncoderOptions, load_sensor_trace

SENSOR_DIR = "sensor-demo"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class SensorDemoSettings:
    """A 1-D transformer of width 96 (no seen encoder of the demo has it: theirs are 128) trained from scratch to
    classify the sensor world's attributes (the audio world's: count, pitch, contour, timbre) from its final CLS."""

    width: int = 96
    depth: int = 3
    heads: int = 4
    window: int = 128  # 62.5 ms spectra (16 Hz bins) every 31 ms: 47 tokens
    hop: int = 64
    mlp_ratio: float = 2.0
    n_train_traces: int = 6000
    n_test_traces: int = 1000
    probe_train_traces: int = 2000
    statistics_traces: int = 200  # of a stream of their own, for the per-channel mean / std
    # As for the AST and TimeSformer: a contour is the ORDER of a burst's spectra, and with positions started at
    # the default std 0.02 the blocks barely see it.
    position_init_std: float = 0.5
    training: HeadTraining = field(default_factory=lambda: HeadTraining(steps=600, batch_size=64))
    torch_threads: int = 1  # see TimesformerDemoSettings

    def options(self) -> SensorEncoderOptions:
        return SensorEncoderOptions(channels=len(CHANNELS), length=LENGTH, window=self.window, hop=self.hop,
                                    width=self.width, depth=self.depth, heads=self.heads, mlp_ratio=self.mlp_ratio)


def render_traces(seed: int, split: str, n: int, progress: bool = True) -> tuple[list[np.ndarray], list[dict]]:
    """Trace `index` of the pretraining stream, written to a scratch `.npy` and decoded as the data set's files are."""
    world, traces, attributes = SensorWorld(), [], []
    with tempfile.TemporaryDirectory(prefix="demo-sensor-") as scratch:
        path = Path(scratch) / f"trace{world.media_extension}"
        for index in tqdm(range(n), desc=f"rendering {split} traces", unit="trace", disable=not progress):
            rng = random.Random(f"demo-sensor-pretraining/{seed}/{split}/{index}")
            scene = world.sample_scene(rng)
            world.render(scene, rng, path)
            traces.append(load_sensor_trace(str(path), len(CHANNELS)))
            attributes.append(world.attributes(scene))
    return traces, attributes


def channel_statistics(seed: int, n: int) -> tuple[list[float], list[float]]:
    traces = np.stack(render_traces(seed, "statistics", n, progress=False)[0])
    return ([round(float(v), 4) for v in traces.mean(axis=(0, 2))],
            [round(float(v), 4) for v in traces.std(axis=(0, 2))])


def new_sensor_encoder(settings: SensorDemoSettings, mean: list[float], std: list[float]) -> SensorEncoder:
    encoder = SensorEncoder(settings.options(), name=SENSOR_DIR)
    with torch.no_grad():
        torch.nn.init.trunc_normal_(encoder.position, std=settings.position_init_std)
    encoder.channel_mean.copy_(torch.tensor(mean))
    encoder.channel_std.copy_(torch.tensor(std))
    return encoder


def sensor_pool(encoder: SensorEncoder, seed: int, split: str, n: int, progress: bool = True) -> MediaPool:
    """Traces through the encoder's test-time transform: inputs `(N, channels, length)`."""
    classes = attribute_classes(SensorWorld().attribute_vocabulary())
    traces, attributes = render_traces(seed, split, n, progress)
    transform = encoder.preprocessing(train=False)
    return MediaPool(torch.stack([transform(t) for t in traces]), label_tensors(attributes, classes), classes)


# Reversing time turns a rising sweep into a falling one; every other attribute keeps its label.
REVERSED_CONTOURS = {"rising": "falling", "falling": "rising"}


def sensor_batch_maker(classes: dict[str, list[str]]) -> BatchMaker:
    """Train-time views that keep what a caption states: time reversed for half the traces (the contour label
    reversed to match) and each channel negated for half of them (a vibration's sign says nothing; the channels are
    normalised, so negation keeps their statistics but for z's small offset)."""
    names = classes["contour"]
    reversed_contour = torch.tensor([names.index(REVERSED_CONTOURS.get(name, name)) for name in names])

    def make_batch(inputs: torch.Tensor, labels: Labels, generator: torch.Generator) -> tuple[torch.Tensor, Labels]:
        batch, labels = inputs.clone(), {attribute: values.clone() for attribute, values in labels.items()}
        reverse = torch.rand(len(batch), generator=generator) < 0.5
        batch[reverse] = batch[reverse].flip(-1)
        labels["contour"][reverse] = reversed_contour[labels["contour"][reverse]]
        negate = torch.rand(batch.shape[:2], generator=generator) < 0.5
        batch[negate] = -batch[negate]
        return batch, labels

    return make_batch


def build_sensor_demo(out_dir: str | Path = DEFAULT_OUT, seed: int = 0, steps: int | None = None,
                      progress: bool = True, settings: SensorDemoSettings = SensorDemoSettings()) -> dict:
    """Pretrain and save the demo sensor encoder into `out_dir/sensor-demo`; returns the report (also saved there)."""
    if steps is not None:
        settings = replace(settings, training=replace(settings.training, steps=steps))
    target = Path(out_dir) / SENSOR_DIR
    with torch_threads(settings.torch_threads):
        torch.manual_seed(seed)
        with Timer() as render_timer:
            mean, std = channel_statistics(seed, settings.statistics_traces)
            encoder = new_sensor_encoder(settings, mean, std)
            train = sensor_pool(encoder, seed, "train", settings.n_train_traces, progress)
            test = sensor_pool(encoder, seed, "test", settings.n_test_traces, progress)
        heads = AttributeHeads(settings.width, train.classes)
        with Timer() as train_timer:
            losses = pretrain_heads(encoder, heads, train.inputs, train.labels, settings.training, seed,
                                    sensor_batch_maker(train.classes), "sensor encoder pretraining", progress)
        with Timer() as eval_timer:
            accuracy = head_accuracy(encoder, heads, test)
            probe_train = train.first(settings.probe_train_traces)
            probe = linear_probe(encoder, probe_train, test)
        fields = {"type": "sensor_transformer", "name": SENSOR_DIR,
                  "checkpoint": repo_relative(target / WEIGHTS_FILE),
                  "model_kwargs": asdict(settings.options()), "normalization": "encoder"}
        report = {
            "seed": seed, "settings": asdict(settings), "encoder": fields,
            "parameters": sum(p.numel() for p in encoder.parameters()),
            "classes": train.classes, "channel_mean": mean, "channel_std": std, **loss_summary(losses),
            "train_traces": len(train), "held_out_traces": len(test), "held_out_head_accuracy": accuracy,
            "linear_probe_train_traces": len(probe_train), "linear_probe_accuracy": probe,
            "timing": {"rendering": render_timer.as_dict(), "training": train_timer.as_dict(),
                       "evaluation": eval_timer.as_dict()},
        }
        with atomic_folder(target) as tmp:
            save_file({k: v.detach().contiguous() for k, v in encoder.state_dict().items()}, str(tmp / WEIGHTS_FILE),
                      metadata={"format": "pt"})
            write_json(tmp / ENCODER_FILE, fields)
            reloaded = build_encoder(folder_encoder_config(tmp))
            gap = (cls_features(reloaded, test.inputs[:64], 2) - cls_features(encoder, test.inputs[:64], 2)).abs().max()
            if gap > 1e-5:
                raise RuntimeError(f"the saved sensor encoder reloads with different outputs (max difference {gap})")
            report["file_bytes"] = file_sizes(tmp)
            write_json(tmp / REPORT_FILE, report)
    return report


def folder_encoder_config(folder: str | Path) -> EncoderConfig:
    """The encoder saved in `folder`: its `encoder.json` with the checkpoint beside it (loads from any directory)."""
    folder = Path(folder)
    return EncoderConfig.from_dict({**read_json(folder / ENCODER_FILE), "checkpoint": str(folder / WEIGHTS_FILE)})


def sensor_demo_config(out_dir: str | Path = DEFAULT_OUT) -> EncoderConfig:
    """The config that loads the shipped demo sensor encoder with `build_encoder`."""
    return folder_encoder_config(Path(out_dir) / SENSOR_DIR)
