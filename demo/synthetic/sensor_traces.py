"""The sensor world: the audio world's scenes as a 3-axis vibration sensor records them (x, y, z; 1.5 s at 2048 Hz).

A scene is the audio world's (demo/synthetic/audio_world.py): 1-3 bursts of one vibration, all of one pitch
band (low 40-60 Hz or high 150-220 Hz at the centre), one pitch contour (steady, or sweeping an octave up or down)
and one timbre (pure: a sine; buzzy: a band-limited square wave, its odd harmonics). Its captions, questions and
attribute vocabulary are the audio world's too, on purpose: the study this world serves (docs/fewshot.md) asks
whether a bridge can learn a new SIGNAL and a new ENCODER from a few samples, while the demo's LM already knows
how to say such scenes (as the large LMs of the literature know the language of a new modality's captions).
Tried first, with captions in sentences of their own (directions of jolts), the tiny LM could not be steered to
say them through a few input tokens even from every training pair (docs/fewshot.md, "What was tried").

What differs is everything the bridge sees: the medium (a `.npy` float array `(3, 3072)`, not a WAV), the
physics (vibrations of 28-311 Hz along a random axis, a gravity offset on z, a slow wander, cross-talk, noise)
and the encoder (a 1-D transformer of width 96, models/modalities/sensor.py). This world is NOT registered in
`WORLDS`, so the demo's tokenizer and LM corpus, built from the registered worlds, stay as shipped.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from epalm.demo.synthetic.audio_world import CLIP_SECONDS, GAP_SECONDS, TONE_SECONDS, AudioWorld

CHANNELS = ("x", "y", "z")
SAMPLE_RATE = 2048  # Hz
LENGTH = round(CLIP_SECONDS * SAMPLE_RATE)  # 3072 samples
# A sweep spans an octave around the centre; the high band tops at 311 Hz, so a buzzy burst keeps its third harmonic.
CENTRE_HZ = {"low": (40.0, 60.0), "high": (150.0, 220.0)}
HARMONIC_CEILING_HZ = 1000.0  # buzzy bursts keep only the odd harmonics below this (Nyquist is 1024 Hz)
EDGE_SECONDS = 0.05
RAMP_SECONDS = 0.03  # fade in and out of each burst
PEAK_G = (0.4, 0.9)  # burst amplitude, in g
CROSS_TALK = 0.15


class SensorWorld(AudioWorld):
    """The audio world's scenes, captions, questions and vocabulary; rendered as vibration sensor traces."""

    name = "sensor"
    modality = "sensor"
    media_extension = ".npy"

    def render(self, scene: dict, rng: random.Random, path: str | Path) -> None:
        write_trace(render_trace(scene, rng), path)


def render_trace(scene: dict, rng: random.Random) -> np.ndarray:
    """The trace as float32 `(3, LENGTH)` in g, deterministic given the rng state."""
    noise_rng = np.random.default_rng(rng.getrandbits(63))
    t = np.arange(LENGTH) / SAMPLE_RATE
    trace = np.zeros((len(CHANNELS), LENGTH))
    trace[2] += 1.0  # gravity on z
    for channel in range(len(CHANNELS)):
        trace[channel] += rng.uniform(-0.1, 0.1)
        trace[channel] += 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 2 * np.pi))
    axis = rng.randrange(len(CHANNELS))  # the bursts shake one axis, and a little the others
    leak = [CROSS_TALK * rng.uniform(-1, 1) for _ in CHANNELS]
    count = scene["count"]
    lengths = [rng.uniform(*TONE_SECONDS[count]) for _ in range(count)]
    gaps = [rng.uniform(*GAP_SECONDS) for _ in range(count - 1)]
    start = rng.uniform(EDGE_SECONDS, CLIP_SECONDS - EDGE_SECONDS - sum(lengths) - sum(gaps))
    centre = rng.uniform(*CENTRE_HZ[scene["pitch"]])
    peak = rng.uniform(*PEAK_G)
    for index, seconds in enumerate(lengths):
        burst = peak * _burst(centre, seconds, scene["contour"], scene["timbre"], rng.uniform(0, 2 * np.pi))
        begin = round(start * SAMPLE_RATE)
        end = min(begin + burst.size, LENGTH)
        for channel in range(len(CHANNELS)):
            trace[channel, begin:end] += (1.0 if channel == axis else leak[channel]) * burst[:end - begin]
        start += seconds + (gaps[index] if index < len(gaps) else 0.0)
    trace += noise_rng.normal(0, rng.uniform(0.02, 0.05), trace.shape)
    return trace.astype(np.float32)


def _burst(centre: float, seconds: float, contour: str, timbre: str, phase0: float) -> np.ndarray:
    """One burst of peak about 1 whose frequency follows the contour on a log scale (as the audio world's tones)."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    slope = {"steady": 0.0, "rising": 1.0, "falling": -1.0}[contour]
    frequency = centre * 2.0 ** (slope * (t / seconds - 0.5))
    phase = phase0 + 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE
    if timbre == "pure":
        wave = np.sin(phase)
    else:  # a band-limited square wave: odd harmonics at 1/k below the ceiling
        harmonics = [k for k in range(1, 64, 2) if k * frequency.max() < HARMONIC_CEILING_HZ]
        wave = sum(np.sin(k * phase) / k for k in harmonics) * (4 / np.pi) / 1.18
    ramp = min(round(RAMP_SECONDS * SAMPLE_RATE), t.size // 2)
    envelope = np.ones(t.size)
    envelope[:ramp] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[t.size - ramp:] = envelope[:ramp][::-1]
    return wave * envelope


def write_trace(trace: np.ndarray, path: str | Path) -> None:
    """NumPy `.npy` (no pickle): float32 `(channels, samples)`."""
    with open(path, "wb") as handle:
        np.save(handle, trace.astype(np.float32), allow_pickle=False)
