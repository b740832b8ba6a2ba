"""Pretrain the demo's tiny AST from scratch on an audio-only task: classify the audio world's attributes.

    python -m epalm.demo.pretraining --only ast [--force]

Clips are synthesised by the audio world itself (16-bit WAV) from an rng stream of their own
(`demo-audio-pretraining/<seed>/<split>/<index>`, never the demo data set's `audio-world/...` clips), decoded with
`load_audio` and turned ONCE into the encoder's own `preprocessing(train=False)` fbank, so the network learns on
exactly what the demo's feature cache feeds it. No augmentation: SpecAugment's masks (up to 96 frames, 24 bins) would
erase tones (the count) and harmonics (the timbre) the labels state, and the clips already vary in place, length,
pitch and loudness. Training, evaluation and saving follow the video encoder's (`video_encoder.py`).
"""
from __future__ import annotations

import random
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm
from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

from epalm.demo.pretraining.folders import atomic_folder, write_json
from epalm.demo.pretraining.head_training import AttributeHeads, HeadTraining, Labels, pretrain_heads
from epalm.demo.pretraining.settings import ENCODER_FILE, REPORT_FILE
from epalm.demo.pretraining.shipped import DEFAULT_OUT
from epalm.demo.pretraining.timing import Timer
from epalm.demo.pretraining.video_encoder import (MediaPool, attribute_classes, cls_features, file_sizes,
                                                     folder_encoder_config, head_accuracy, label_tensors, linear_probe,
                                                     loss_summary, repo_relative, torch_threads)
from epalm.demo.synthetic.audio_world import CLIP_SECONDS, SAMPLE_RATE, AudioWorld
from epalm.models.encoders import EncoderConfig, build_encoder
from epalm.models.modalities.audio.ast import ASTEncoder
from epalm.models.modalities.audio.decode import load_audio
from epalm.models.modalities.audio.modality import AUDIOSET_MEAN, AUDIOSET_STD

AUDIO_DIR = "ast-demo"
FBANK_WINDOW, FBANK_SHIFT = 400, 160  # Kaldi fbank at 16 kHz: 25 ms windows every 10 ms


@dataclass(frozen=True)
class ASTDemoSettings:
    """A transformers AST trained from scratch to classify the audio world's attributes from its final CLS."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    # Non-overlapping 16 x 16 patches (stride 16, not AST's 10): 8 x 10 = 80 patches instead of 12 x 15 = 180.
    patch_size: int = 16
    stride: int = 16
    audio_frames: int = 160  # the 1.5 s clips give 148 fbank frames; zero-padded to 10 whole patches
    mel_bins: int = 128
    sample_rate: int = SAMPLE_RATE
    n_train_clips: int = 5000
    n_test_clips: int = 1000
    probe_train_clips: int = 2000
    # transformers initialises AST's position embeddings at 0 (they come from the ImageNet / AudioSet checkpoint when
    # fine-tuning); from scratch every patch would look the same wherever it is, and "low" or "high" IS where.
    position_init_std: float = 0.5
    training: HeadTraining = field(default_factory=lambda: HeadTraining(steps=800))
    torch_threads: int = 1  # see TimesformerDemoSettings

    def model_kwargs(self) -> dict:
        return dict(hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                    num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
                    patch_size=self.patch_size, frequency_stride=self.stride, time_stride=self.stride)


def new_ast(settings: ASTDemoSettings) -> ASTEncoder:
    """A randomly initialised AST wrapped as the project's encoder, with the AudioSet fbank normalisation."""
    model = ASTModel(ASTConfig(max_length=settings.audio_frames, num_mel_bins=settings.mel_bins,
                               **settings.model_kwargs()))
    with torch.no_grad():
        nn.init.trunc_normal_(model.embeddings.position_embeddings, std=settings.position_init_std)
        nn.init.trunc_normal_(model.embeddings.cls_token, std=0.02)
    config = EncoderConfig(type="ast", audio_frames=settings.audio_frames, sample_rate=settings.sample_rate,
                           mel_bins=settings.mel_bins)
    return ASTEncoder(model, config, AUDIOSET_MEAN, AUDIOSET_STD)


def render_clips(world: AudioWorld, seed: int, split: str, n: int,
                 progress: bool = True) -> Iterator[tuple[Path, dict]]:
    """Synthesise clip `index` of the pretraining stream to a scratch WAV; yields its path and attributes."""
    with tempfile.TemporaryDirectory(prefix="demo-audio-") as scratch:
        path = Path(scratch) / f"clip{world.media_extension}"
        for index in tqdm(range(n), desc=f"synthesising {split} clips", unit="clip", disable=not progress):
            rng = random.Random(f"demo-audio-pretraining/{seed}/{split}/{index}")
            scene = world.sample_scene(rng)
            world.render(scene, rng, path)
            yield path, world.attributes(scene)


def render_audio_pool(encoder: ASTEncoder, seed: int, split: str, n: int, progress: bool = True) -> MediaPool:
    """Clips decoded and turned into the encoder's test-time fbank once: inputs `(N, audio_frames, mel_bins)`."""
    world = AudioWorld()
    classes = attribute_classes(world.attribute_vocabulary())
    transform = encoder.preprocessing(train=False)
    inputs, attributes = [], []
    for path, clip_attributes in render_clips(world, seed, split, n, progress):
        inputs.append(transform(load_audio(str(path), encoder.sample_rate)))
        attributes.append(clip_attributes)
    return MediaPool(torch.stack(inputs), label_tensors(attributes, classes), classes)


def unchanged(inputs: torch.Tensor, labels: Labels, generator: torch.Generator) -> tuple[torch.Tensor, Labels]:
    return inputs, labels


def build_ast_demo(out_dir: str | Path = DEFAULT_OUT, seed: int = 0, steps: int | None = None,
                   progress: bool = True, settings: ASTDemoSettings = ASTDemoSettings()) -> dict:
    """Pretrain and save the demo AST into `out_dir/ast-demo`; returns the report (also saved there).

    `steps` overrides `settings.training.steps`. Deterministic given the seed, the settings and the thread count."""
    if steps is not None:
        settings = replace(settings, training=replace(settings.training, steps=steps))
    clip_frames = 1 + (round(CLIP_SECONDS * settings.sample_rate) - FBANK_WINDOW) // FBANK_SHIFT
    if clip_frames > settings.audio_frames:
        raise ValueError(f"audio_frames {settings.audio_frames} would cut the {CLIP_SECONDS} s clips "
                         f"({clip_frames} fbank frames)")
    target = Path(out_dir) / AUDIO_DIR
    with torch_threads(settings.torch_threads):
        torch.manual_seed(seed)
        encoder = new_ast(settings)
        with Timer() as render_timer:
            train = render_audio_pool(encoder, seed, "train", settings.n_train_clips, progress)
            test = render_audio_pool(encoder, seed, "test", settings.n_test_clips, progress)
        heads = AttributeHeads(settings.hidden_size, train.classes)
        with Timer() as train_timer:
            losses = pretrain_heads(encoder, heads, train.inputs, train.labels, settings.training, seed, unchanged,
                                    "AST pretraining", progress)
        with Timer() as eval_timer:
            accuracy = head_accuracy(encoder, heads, test)
            probe_train = train.first(settings.probe_train_clips)
            probe = linear_probe(encoder, probe_train, test)
        fields = {"type": "ast", "name": repo_relative(target), "pretrained": True,
                  "audio_frames": settings.audio_frames, "sample_rate": settings.sample_rate,
                  "mel_bins": settings.mel_bins, "normalization": "encoder"}
        report = {
            "seed": seed, "settings": asdict(settings), "encoder": fields,
            "parameters": sum(p.numel() for p in encoder.model.parameters()),
            "classes": train.classes, "fbank_mean": encoder.mean, "fbank_std": encoder.std,
            "clip_fbank_frames": clip_frames, **loss_summary(losses),
            "train_clips": len(train), "held_out_clips": len(test), "held_out_head_accuracy": accuracy,
            "linear_probe_train_clips": len(probe_train), "linear_probe_accuracy": probe,
            "timing": {"rendering": render_timer.as_dict(), "training": train_timer.as_dict(),
                       "evaluation": eval_timer.as_dict()},
        }
        with atomic_folder(target) as tmp:
            encoder.model.save_pretrained(tmp)  # model.safetensors + config.json (strides included); heads dropped
            # preprocessor_config.json: the fbank size and the normalisation build_encoder reads (mean / std).
            with warnings.catch_warnings():  # Kaldi's empty lowest mel filters at 128 bins, as in FbankFeatures
                warnings.simplefilter("ignore", UserWarning)
                ASTFeatureExtractor(sampling_rate=settings.sample_rate, num_mel_bins=settings.mel_bins,
                                    max_length=settings.audio_frames, mean=encoder.mean, std=encoder.std
                                    ).save_pretrained(tmp)
            write_json(tmp / ENCODER_FILE, fields)
            reloaded = build_encoder(folder_encoder_config(tmp))
            if (reloaded.mean, reloaded.std) != (encoder.mean, encoder.std):
                raise RuntimeError(f"the saved AST reloads with fbank mean/std {reloaded.mean}/{reloaded.std}")
            gap = (cls_features(reloaded, test.inputs[:64], 2) - cls_features(encoder, test.inputs[:64], 2)).abs().max()
            if gap > 1e-5:
                raise RuntimeError(f"the saved AST reloads with different outputs (max difference {gap.item()})")
            report["file_bytes"] = file_sizes(tmp)
            write_json(tmp / REPORT_FILE, report)
    return report


def ast_demo_config(out_dir: str | Path = DEFAULT_OUT) -> EncoderConfig:
    """The config that loads the shipped demo AST with `build_encoder`."""
    return folder_encoder_config(Path(out_dir) / AUDIO_DIR)
