"""Pretrain the demo's tiny TimeSformer from scratch on a video-only task: classify the video world's attributes.

    python -m epalm.demo.pretraining --only timesformer [--force]

Clips are rendered by the video world itself (H.264 and all) from an rng stream of their own
(`demo-video-pretraining/<seed>/<split>/<index>`, never the demo data set's `video-world/...` clips), decoded with
`load_video_frames` and preprocessed ONCE with the encoder's own `preprocessing(train=False)`, so the network learns on
exactly what the demo's feature cache feeds it. Training reads the CLS eP-ALM reads (last block, final norm) with one
linear head per attribute (discarded afterwards). The saved folder loads with `build_encoder` (see `encoder.json`).

The generic part (an in-memory pool of preprocessed clips with labels, the training loop, held-out head accuracy and
the linear probe on the last two blocks' CLS) is shared with `audio_encoder.py`.
"""
from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm
from transformers import TimesformerConfig, TimesformerModel, VideoMAEImageProcessor

from epalm.demo.pretraining.folders import atomic_folder, read_json, write_json
from epalm.demo.pretraining.head_training import (AttributeHeads, BatchMaker, HeadTraining, Labels,
                                                     pretrain_heads)
from epalm.demo.pretraining.probes import PROBED_BLOCKS, probe_accuracy
from epalm.demo.pretraining.settings import ENCODER_FILE, REPORT_FILE
from epalm.demo.pretraining.shipped import DEFAULT_OUT
from epalm.demo.pretraining.timing import Timer
from epalm.demo.synthetic.video_world import NUM_FRAMES as CLIP_FRAMES
from epalm.demo.synthetic.video_world import VideoWorld
from epalm.models.encoders import EncoderConfig, PerceptionEncoder, build_encoder
from epalm.models.modalities.video.decode import load_video_frames, sample_frame_indices
from epalm.models.modalities.video.timesformer import TimesformerEncoder

VIDEO_DIR = "timesformer-demo"
REPO_ROOT = DEFAULT_OUT.parents[1]
# A horizontal flip mirrors these attribute values; every other attribute keeps its label.
MIRRORED_VALUES = {"direction": {"left": "right", "right": "left"}}


@dataclass(frozen=True)
class TimesformerDemoSettings:
    """A transformers TimeSformer trained from scratch to classify the video world's attributes from its final CLS."""

    # 24 px (the encoder resizes the 32 px clips, bicubic) with 8 px patches: 9 tokens a frame. 32/8 (16 tokens)
    # cost ~3x a step on this CPU; 32/16 (4 tokens) learnt the shape far slower.
    image_size: int = 24
    patch_size: int = 8
    num_frames: int = 8
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    n_train_clips: int = 3500
    n_test_clips: int = 500
    probe_train_clips: int = 2000  # of the training pool, for the linear probe on frozen features
    statistics_clips: int = 100  # of a stream of their own, for the pixel mean / std
    # transformers initialises the position embeddings at std 0.02 and the time embeddings at 0 (right when starting
    # from ImageNet weights); from scratch the blocks then barely see where or when a patch is: after 600 steps the
    # direction was right 52% of the time (the axis, not the sense), 96% with a random position table of std 0.5.
    # The sinusoidal time table (neighbouring frames alike) then brought the direction in ~150 steps earlier.
    position_init_std: float = 0.5
    time_init_scale: float = 0.7
    training: HeadTraining = field(default_factory=lambda: HeadTraining(
        steps=1000, loss_weights={"shape": 2.0}))  # the shape is the slowest attribute to learn
    # One thread: on the shared 2-core machine two threads ran a step ~8x SLOWER (threads waiting on each other).
    torch_threads: int = 1

    def model_kwargs(self) -> dict:
        return dict(image_size=self.image_size, patch_size=self.patch_size, hidden_size=self.hidden_size,
                    num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
                    intermediate_size=self.intermediate_size, attention_type="divided_space_time")


# ---------------------------------------------------------------- shared with audio_encoder.py


@dataclass
class MediaPool:
    """`inputs`: (N, ...) preprocessed model inputs; `labels`: attribute -> (N,) index into `classes[attribute]`."""

    inputs: torch.Tensor
    labels: dict[str, torch.Tensor]
    classes: dict[str, list[str]]

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def first(self, n: int) -> MediaPool:
        return MediaPool(self.inputs[:n], {a: v[:n] for a, v in self.labels.items()}, self.classes)


def attribute_classes(vocabulary: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    return {attribute: sorted(values) for attribute, values in vocabulary.items()}


def label_tensors(attributes: list[dict[str, str]], classes: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    return {a: torch.tensor([classes[a].index(item[a]) for item in attributes]) for a in classes}


@torch.no_grad()
def cls_features(encoder: PerceptionEncoder, inputs: torch.Tensor, num_tokens: int,
                 batch_size: int = 250) -> torch.Tensor:
    """(N, num_tokens, d): the CLS of the last `num_tokens` blocks after the final norm, as eP-ALM reads them."""
    encoder.eval()
    return torch.cat([encoder(inputs[i:i + batch_size], num_tokens) for i in range(0, len(inputs), batch_size)])


@torch.no_grad()
def head_accuracy(encoder: PerceptionEncoder, heads: AttributeHeads, pool: MediaPool) -> dict[str, float]:
    heads.eval()
    logits = heads(cls_features(encoder, pool.inputs, 1)[:, 0])
    return {a: round((logits[a].argmax(-1) == pool.labels[a]).float().mean().item(), 4) for a in logits}


def linear_probe(encoder: PerceptionEncoder, train: MediaPool, test: MediaPool) -> dict[str, dict[str, float]]:
    """block ("last", "last-1") -> attribute -> held-out accuracy of a logistic regression on that block's frozen CLS:
    does a linear map recover every attribute from each token the bridge reads?"""
    return probe_accuracy(cls_features(encoder, train.inputs, PROBED_BLOCKS).numpy(), train.labels,
                          cls_features(encoder, test.inputs, PROBED_BLOCKS).numpy(), test.labels)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def repo_relative(folder: Path) -> str:
    """The folder as the repo's configs name it (relative to the repo root, as run from there), else absolute."""
    folder = folder.resolve()
    return str(folder.relative_to(REPO_ROOT)) if folder.is_relative_to(REPO_ROOT) else str(folder)


def folder_encoder_config(folder: str | Path) -> EncoderConfig:
    """The encoder saved in `folder`: the fields of its `encoder.json`, named by the folder's actual path (so it loads
    from any working directory)."""
    folder = Path(folder)
    return EncoderConfig.from_dict({**read_json(folder / ENCODER_FILE), "name": str(folder.resolve())})


def file_sizes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in sorted(folder.iterdir()) if path.is_file()}


def loss_summary(losses: list[float]) -> dict[str, float]:
    return {"loss_first_20_steps": round(sum(losses[:20]) / len(losses[:20]), 4),
            "loss_last_20_steps": round(sum(losses[-20:]) / len(losses[-20:]), 4)}


# ---------------------------------------------------------------- video


def new_timesformer(settings: TimesformerDemoSettings, mean: list[float], std: list[float]) -> TimesformerEncoder:
    """A randomly initialised TimeSformer wrapped as the project's encoder, normalising pixels with mean/std."""
    model = TimesformerModel(TimesformerConfig(num_frames=settings.num_frames, **settings.model_kwargs()))
    embeddings = model.embeddings
    with torch.no_grad():
        nn.init.trunc_normal_(embeddings.position_embeddings, std=settings.position_init_std)
        table = sinusoid_table(settings.num_frames, settings.hidden_size)
        embeddings.time_embeddings.copy_(settings.time_init_scale * table)
    return TimesformerEncoder(model, EncoderConfig(type="timesformer", num_frames=settings.num_frames), mean, std)


def sinusoid_table(length: int, width: int) -> torch.Tensor:
    """(1, length, width): sin / cos of the position at geometric frequencies (the Transformer's table, base 100
    for so short a sequence), so neighbouring frames get similar vectors."""
    frequencies = 100.0 ** (-torch.arange(width // 2, dtype=torch.float32) / (width // 2))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)[None]


def render_clips(world: VideoWorld, seed: int, split: str, n: int,
                 progress: bool = True) -> Iterator[tuple[Path, dict]]:
    """Render clip `index` of the pretraining stream to a scratch mp4; yields its path and attributes."""
    with tempfile.TemporaryDirectory(prefix="demo-video-") as scratch:
        path = Path(scratch) / f"clip{world.media_extension}"
        for index in tqdm(range(n), desc=f"rendering {split} clips", unit="clip", disable=not progress):
            rng = random.Random(f"demo-video-pretraining/{seed}/{split}/{index}")
            scene = world.sample_scene(rng)
            world.render(scene, rng, path)
            yield path, world.attributes(scene)


def pixel_statistics(seed: int, n: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the decoded pretraining clips' pixels in [0, 1] (the encoder's normalisation).

    TimeSformer's own 0.45 / 0.225 leave the light background at about +1.8 with the small shape a slight dent in
    it: from scratch the network learnt nothing in 400 steps. Centred on these statistics, a trial on colour alone
    learnt it within 60 steps."""
    world = VideoWorld()
    pixels = np.concatenate([load_video_frames(str(path), CLIP_FRAMES, train=False).reshape(-1, 3)
                             for path, _ in render_clips(world, seed, "statistics", n, progress=False)]) / 255.0
    return [round(float(v), 4) for v in pixels.mean(0)], [round(float(v), 4) for v in pixels.std(0)]


def render_video_pool(encoder: TimesformerEncoder, seed: int, split: str, n: int, all_frames: bool,
                      progress: bool = True) -> tuple[MediaPool, float]:
    """Clips decoded and preprocessed once: `all_frames` keeps all 16 frames `(N, 3, 16, S, S)` (training draws 8 of
    them per step), else the 8 test-time frames `(N, 3, 8, S, S)`. Also returns the largest difference, over the
    first clips, between these inputs' test-time frames and the demo's path (`load_video_frames(path, 8)` then
    `preprocessing(False)`); frame selection and the per-frame resize commute, so it must be 0."""
    world = VideoWorld()
    classes = attribute_classes(world.attribute_vocabulary())
    transform = encoder.preprocessing(train=False)
    middle = sample_frame_indices(CLIP_FRAMES, encoder.num_frames, train=False)
    inputs, attributes, gap = [], [], 0.0
    for index, (path, clip_attributes) in enumerate(render_clips(world, seed, split, n, progress)):
        clip = transform(load_video_frames(str(path), CLIP_FRAMES, train=False))  # (3, 16, S, S)
        if index < 4:
            demo = transform(load_video_frames(str(path), encoder.num_frames, train=False))
            gap = max(gap, (demo - clip[:, middle]).abs().max().item())
        inputs.append(clip if all_frames else clip[:, middle])
        attributes.append(clip_attributes)
    return MediaPool(torch.stack(inputs), label_tensors(attributes, classes), classes), gap


def video_batch_maker(num_frames: int, classes: dict[str, list[str]], seed: int) -> BatchMaker:
    """Train-time views of 16-frame clips: one random frame per segment (the project's training frame sampling) and
    a horizontal flip of half the clips, with their left/right labels swapped."""
    frame_rng = np.random.default_rng(seed)

    def make_batch(clips: torch.Tensor, labels: Labels, generator: torch.Generator) -> tuple[torch.Tensor, Labels]:
        frames = torch.tensor([sample_frame_indices(clips.shape[2], num_frames, train=True, rng=frame_rng)
                               for _ in range(len(clips))])
        batch = torch.stack([clip[:, index] for clip, index in zip(clips, frames)])
        flip = torch.rand(len(batch), generator=generator) < 0.5
        batch[flip] = batch[flip].flip(-1)
        labels = {attribute: values.clone() for attribute, values in labels.items()}
        for attribute, mirror in MIRRORED_VALUES.items():
            names = classes[attribute]
            swapped = torch.tensor([names.index(mirror.get(name, name)) for name in names])
            labels[attribute][flip] = swapped[labels[attribute][flip]]
        return batch, labels

    return make_batch


def build_timesformer_demo(out_dir: str | Path = DEFAULT_OUT, seed: int = 0, steps: int | None = None,
                           progress: bool = True,
                           settings: TimesformerDemoSettings = TimesformerDemoSettings()) -> dict:
    """Pretrain and save the demo TimeSformer into `out_dir/timesformer-demo`; returns the report (also saved there).

    `steps` overrides `settings.training.steps`. Deterministic given the seed, the settings and the thread count."""
    if steps is not None:
        settings = replace(settings, training=replace(settings.training, steps=steps))
    target = Path(out_dir) / VIDEO_DIR
    with torch_threads(settings.torch_threads):
        torch.manual_seed(seed)
        with Timer() as render_timer:
            mean, std = pixel_statistics(seed, settings.statistics_clips)
            encoder = new_timesformer(settings, mean, std)
            train, train_gap = render_video_pool(encoder, seed, "train", settings.n_train_clips, True, progress)
            test, test_gap = render_video_pool(encoder, seed, "test", settings.n_test_clips, False, progress)
        heads = AttributeHeads(settings.hidden_size, train.classes)
        make_batch = video_batch_maker(settings.num_frames, train.classes, seed)
        with Timer() as train_timer:
            losses = pretrain_heads(encoder, heads, train.inputs, train.labels, settings.training, seed, make_batch,
                                    "TimeSformer pretraining", progress)
        with Timer() as eval_timer:
            accuracy = head_accuracy(encoder, heads, test)
            middle = sample_frame_indices(CLIP_FRAMES, settings.num_frames, train=False)
            probe_train = train.first(settings.probe_train_clips)
            probe_train = MediaPool(probe_train.inputs[:, :, middle], probe_train.labels, train.classes)
            probe = linear_probe(encoder, probe_train, test)
        fields = {"type": "timesformer", "name": repo_relative(target), "pretrained": True,
                  "num_frames": settings.num_frames, "normalization": "encoder"}
        report = {
            "seed": seed, "settings": asdict(settings), "encoder": fields,
            "parameters": sum(p.numel() for p in encoder.model.parameters()),
            "classes": train.classes, "pixel_mean": mean, "pixel_std": std,
            "preprocessing_max_abs_difference": max(train_gap, test_gap), **loss_summary(losses),
            "train_clips": len(train), "held_out_clips": len(test), "held_out_head_accuracy": accuracy,
            "linear_probe_train_clips": len(probe_train), "linear_probe_accuracy": probe,
            "timing": {"rendering": render_timer.as_dict(), "training": train_timer.as_dict(),
                       "evaluation": eval_timer.as_dict()},
        }
        with atomic_folder(target) as tmp:
            encoder.model.save_pretrained(tmp)  # model.safetensors + config.json; the heads are not part of it
            # preprocessor_config.json: where build_encoder reads the pixel mean / std
            VideoMAEImageProcessor(size={"height": settings.image_size, "width": settings.image_size},
                                   resample=Image.BICUBIC, do_center_crop=False, image_mean=mean, image_std=std
                                   ).save_pretrained(tmp)
            write_json(tmp / ENCODER_FILE, fields)
            # It must load back through build_encoder unchanged, preprocessing included.
            reloaded = build_encoder(folder_encoder_config(tmp))
            if (reloaded.mean, reloaded.std) != (encoder.mean, encoder.std):
                raise RuntimeError(f"the saved TimeSformer reloads with pixel mean/std {reloaded.mean}/{reloaded.std}")
            gap = (cls_features(reloaded, test.inputs[:64], 2) - cls_features(encoder, test.inputs[:64], 2)).abs().max()
            if gap > 1e-5:
                raise RuntimeError(f"the saved TimeSformer reloads with different outputs (max difference "
                                   f"{gap.item()})")
            report["file_bytes"] = file_sizes(tmp)
            write_json(tmp / REPORT_FILE, report)
    return report


def timesformer_demo_config(out_dir: str | Path = DEFAULT_OUT) -> EncoderConfig:
    """The config that loads the shipped demo TimeSformer with `build_encoder`."""
    return folder_encoder_config(Path(out_dir) / VIDEO_DIR)
