"""The sensor world: a 3-axis motion sensor (x, y, z; 2 s at 64 Hz) that records 1-3 jolts of one kind.

The modality the demo's LM has never read about: this world is NOT registered in `WORLDS` (so the demo's
tokenizer and LM corpus, built from the registered worlds, stay as shipped), and the few-shot study
(docs/fewshot.md) integrates it from a handful of captioned traces. Its captions use only words the demo
tokenizer holds as whole tokens (the tests check it), so the frozen LM can say them; their sentences are new.

A trace is four attributes, each plainly visible in the signal, as in the other worlds:
- count: 1, 2 or 3 jolts (bursts);
- direction: which axis the jolts deflect and which way: right / left (x, + / -), up / down (y, + / -);
- strength: high or low peak deflection;
- texture: pure (a smooth bump) or buzzy (the bump shaken by a fast vibration).
Nuisances: the resting offsets (z carries gravity), a slow wander, noise, cross-talk onto the other axes,
the jolts' places and widths.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from dataset.synthetic.worlds import QA, World

CHANNELS = ("x", "y", "z")
SAMPLE_RATE = 64  # Hz
LENGTH = 128  # samples per trace (2 s)
COUNTS = (1, 2, 3)
DIRECTIONS = ("up", "down", "left", "right")
STRENGTHS = ("high", "low")
TEXTURES = ("pure", "buzzy")
AXIS = {"right": (0, 1.0), "left": (0, -1.0), "up": (1, 1.0), "down": (1, -1.0)}  # channel, sign
COUNT_WORDS = {2: "two", 3: "three"}
SINGLE_COUNT_PHRASES = ("a", "one", "a single")
NOUNS = {1: "move", 2: "moves"}
TEXTURE_WORDS = {"pure": ("pure", "clean"), "buzzy": ("buzzy", "buzzing")}
DIRECTION_PHRASES = {"up": ("up", "upwards"), "down": ("down", "downwards"),
                     "left": ("to the left", "leftwards"), "right": ("to the right", "rightwards")}

# {n} count phrase, {s} strength, {t} texture word, {noun}, {d} direction phrase, {be} is/are
CAPTION_TEMPLATES = (
    "{n} {s} {t} {noun} {d}",
    "there {be} {n} {s} {t} {noun} going {d}",
    "you can see {n} {s} {t} {noun} {d}",
    "the clip has {n} {t} {noun} {d} that {be} {s}",
    "the object moves {d} in {n} {s} {t} {noun}",
    "{n} {noun} {d} that {be} {s} and {t}",
)
QUESTION_TEMPLATES = {
    "count": ("how many moves are there?", "how many times does it move?"),
    "direction": ("which way does it move?", "what direction are the moves?"),
    "strength": ("are the moves high or low?", "is the move high or low?"),
    "texture": ("are the moves pure or buzzy?", "is the move clean or buzzing?"),
}

# Jolt width in samples, per count; every layout fits in LENGTH with EDGE samples free at both ends.
WIDTH = {1: (24, 32), 2: (16, 22), 3: (12, 16)}
GAP = (8, 14)
EDGE = 4
PEAK = {"low": (0.25, 0.45), "high": (0.8, 1.2)}
BUZZ_CYCLES = (0.3, 0.42)  # vibration frequency, cycles per sample: far faster than a jolt
BUZZ_DEPTH = 0.7
CROSS_TALK = 0.15


def _article_phrases() -> list[str]:
    """ "a high", "a pure", "a move" ...: the article of a count-1 phrase followed by any word a template puts after
    it (the bare article is not a count)."""
    words = list(STRENGTHS) + [w for words in TEXTURE_WORDS.values() for w in words] + [NOUNS[1]]
    return [f"a {w}" for w in words]


class SensorWorld(World):
    name = "sensor"
    modality = "sensor"
    media_extension = ".npy"

    def sample_scene(self, rng: random.Random) -> dict:
        return {"count": rng.choice(COUNTS), "direction": rng.choice(DIRECTIONS),
                "strength": rng.choice(STRENGTHS), "texture": rng.choice(TEXTURES)}

    def captions(self, scene: dict, rng: random.Random) -> list[str]:
        n = scene["count"]
        captions = []
        for template in rng.sample(CAPTION_TEMPLATES, 5):
            count = rng.choice(SINGLE_COUNT_PHRASES) if n == 1 else COUNT_WORDS[n]
            captions.append(template.format(
                n=count, s=scene["strength"],
                t=rng.choice(TEXTURE_WORDS[scene["texture"]]), noun=NOUNS[min(n, 2)],
                d=rng.choice(DIRECTION_PHRASES[scene["direction"]]), be="is" if n == 1 else "are",
            ))
        return captions

    def questions(self, scene: dict, rng: random.Random) -> list[QA]:
        qas = [
            QA(rng.choice(QUESTION_TEMPLATES["count"]), str(scene["count"]), "count", "number"),
            QA(rng.choice(QUESTION_TEMPLATES["direction"]), scene["direction"], "direction", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["strength"]), scene["strength"], "strength", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["texture"]), scene["texture"], "texture", "other"),
        ]
        check_yes = rng.random() < 0.5
        value = scene["direction"] if check_yes else rng.choice([d for d in DIRECTIONS if d != scene["direction"]])
        qas.append(QA(f"does it move {DIRECTION_PHRASES[value][0]}?", "yes" if check_yes else "no", "check", "yes/no"))
        return qas

    def attributes(self, scene: dict) -> dict[str, str]:
        return {"count": str(scene["count"]), "direction": scene["direction"], "strength": scene["strength"],
                "texture": scene["texture"]}

    def attribute_vocabulary(self) -> dict[str, dict[str, list[str]]]:
        return {
            "count": {"1": ["1", "one", "single"] + _article_phrases(), "2": ["2", "two"], "3": ["3", "three"]},
            "direction": {"up": ["up", "upwards"], "down": ["down", "downwards"], "left": ["left", "leftwards"],
                          "right": ["right", "rightwards"]},
            "strength": {s: [s] for s in STRENGTHS},
            "texture": {t: list(words) for t, words in TEXTURE_WORDS.items()},
        }

    def render(self, scene: dict, rng: random.Random, path: str | Path) -> None:
        write_trace(render_trace(scene, rng), path)


def render_trace(scene: dict, rng: random.Random) -> np.ndarray:
    """The trace as float32 `(3, LENGTH)`, deterministic given the rng state."""
    noise_rng = np.random.default_rng(rng.getrandbits(63))
    t = np.arange(LENGTH, dtype=np.float64)
    trace = np.zeros((len(CHANNELS), LENGTH))
    trace[2] += 1.0  # gravity on z
    for channel in range(len(CHANNELS)):
        trace[channel] += rng.uniform(-0.1, 0.1)
        trace[channel] += 0.05 * np.sin(2 * np.pi * rng.uniform(0.002, 0.01) * t + rng.uniform(0, 2 * np.pi))
    count = scene["count"]
    widths = [rng.randint(*WIDTH[count]) for _ in range(count)]
    gaps = [rng.randint(*GAP) for _ in range(count - 1)]
    start = rng.randint(EDGE, LENGTH - EDGE - sum(widths) - sum(gaps))
    peak = rng.uniform(*PEAK[scene["strength"]])
    channel, sign = AXIS[scene["direction"]]
    other = 1 - channel
    for index, width in enumerate(widths):
        jolt = sign * peak * _jolt(width, scene["texture"], rng)
        trace[channel, start:start + width] += jolt
        trace[other, start:start + width] += CROSS_TALK * rng.choice((-1, 1)) * jolt
        trace[2, start:start + width] += CROSS_TALK * np.abs(jolt)
        start += width + (gaps[index] if index < len(gaps) else 0)
    trace += noise_rng.normal(0, rng.uniform(0.02, 0.05), trace.shape)
    return trace.astype(np.float32)


def _jolt(width: int, texture: str, rng: random.Random) -> np.ndarray:
    """One jolt of peak about 1: a Hann bump, shaken by a fast vibration when buzzy (its mean stays positive)."""
    envelope = np.hanning(width + 2)[1:-1]
    if texture == "pure":
        return envelope
    cycles, phase = rng.uniform(*BUZZ_CYCLES), rng.uniform(0, 2 * np.pi)
    shaken = envelope * (1 + BUZZ_DEPTH * np.sin(2 * np.pi * cycles * np.arange(width) + phase))
    return shaken / shaken.max()


def write_trace(trace: np.ndarray, path: str | Path) -> None:
    """NumPy `.npy` (no pickle): float32 `(channels, samples)`."""
    with open(path, "wb") as handle:
        np.save(handle, trace.astype(np.float32), allow_pickle=False)
