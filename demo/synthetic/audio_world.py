"""The audio world: 1-3 synthesised tones in a 1.5 s clip, all of one pitch band, pitch contour and timbre.

Kept this small on purpose, like the image world: the whole clip is four attributes (count, pitch, contour,
timbre), each plainly visible in a mel spectrogram, so one audio token can carry it and a tiny AST trained
from scratch in minutes can hear it: the count in the energy envelope, low or high in which mel bands light
up, rising / falling / steady in their slope, pure (sine) or buzzy (odd harmonics, a square-like wave) in
whether the bands at 3, 5, 7 ... times the pitch light up too.
"""
from __future__ import annotations

import random
import wave
from pathlib import Path

import numpy as np

from epalm.demo.synthetic.worlds import QA, WORLDS, World

SAMPLE_RATE = 16000  # what the AST front end expects (spec section 5)
CLIP_SECONDS = 1.5
COUNTS = (1, 2, 3)
PITCHES = ("low", "high")
CONTOURS = ("steady", "rising", "falling")
TIMBRES = ("pure", "buzzy")
COUNT_WORDS = {2: "two", 3: "three"}
# Count 1 is said as "a", "one" or "a single"; the vocabulary lists "a" only inside "a <adjective>", so no other
# article reads as a count (templates have no other "a").
SINGLE_COUNT_PHRASES = ("a", "one", "a single")
NOUNS = {1: ("tone", "sound", "note"), 2: ("tones", "sounds", "notes", "beeps")}
TIMBRE_WORDS = {"pure": ("pure", "clean"), "buzzy": ("buzzy", "buzzing")}
# How a contour is said as a verb after a singular / plural subject.
CONTOUR_VERBS = {"steady": ("stays steady", "stay steady"), "rising": ("rises", "rise"), "falling": ("falls", "fall")}

# {n} count phrase, {m} contour adjective, {p} pitch, {t} timbre word, {noun}, {be} is/are, {v} contour verb
# agreeing with the count, {v1} the singular verb (after "the pitch").
CAPTION_TEMPLATES = (
    "{n} {m} {p} {t} {noun}",
    "{n} {p} {t} {noun} whose pitch {v1}",
    "{n} {p} pitched {t} {noun} {m} in pitch",
    "there {be} {n} {t} {noun} at {p} pitch that {v}",
    "you can hear {n} {m} {t} {noun} at {p} pitch",
    "the clip has {n} {p} {t} {noun} and the pitch {v1}",
    "{n} {m} {noun} {p} in pitch and {t} in tone",
)
# Phrased the same whatever the clip, so the question alone tells nothing about the answer.
QUESTION_TEMPLATES = {
    "count": ("how many sounds are there?", "how many tones can you hear?", "how many times does it sound?"),
    "pitch": ("is the sound high or low?", "is the pitch high or low?", "what is the pitch of the sound?"),
    "contour": ("is the pitch rising, falling or steady?", "how does the pitch move?", "what does the pitch do?"),
    "timbre": ("is the sound pure or buzzy?", "is the tone pure or buzzy?", "what is the timbre of the sound?"),
}
# Yes/no checks of one attribute: half about the true value, half about another one.
CHECK_TEMPLATES = {
    "count": "are there {value} sounds?",
    "pitch": "is the sound {value}?",
    "contour": "is the pitch {value}?",
    "timbre": "is the sound {value}?",
}

# Pitch bands: the centre frequency of a tone, Hz. A rising or falling tone sweeps one octave around it,
# so low stays within 155-495 Hz and high within 707-2263 Hz.
CENTRE_HZ = {"low": (220.0, 350.0), "high": (1000.0, 1600.0)}
SWEEP_OCTAVES = 1.0
HARMONIC_CEILING_HZ = 7600.0  # buzzy tones keep only the odd harmonics below this (Nyquist is 8000 Hz)
# Tone length and the silence between tones, seconds, per count; every layout fits in CLIP_SECONDS.
TONE_SECONDS = {1: (0.8, 1.0), 2: (0.32, 0.38), 3: (0.2, 0.25)}
GAP_SECONDS = (0.12, 0.18)
EDGE_SECONDS = 0.05  # silence kept at both ends of the clip
RAMP_SECONDS = 0.01  # fade in and out of each tone, so it has no click


def _article_phrases() -> list[str]:
    """ "a low", "a rising", "a pure" ...: the article of a count-1 phrase, followed by any adjective a template puts
    after the count."""
    words = list(PITCHES) + list(CONTOURS) + [w for words in TIMBRE_WORDS.values() for w in words]
    return [f"a {w}" for w in words]


class AudioWorld(World):
    name = "audio"
    modality = "audio"
    media_extension = ".wav"

    def sample_scene(self, rng: random.Random) -> dict:
        return {
            "count": rng.choice(COUNTS),
            "pitch": rng.choice(PITCHES),
            "contour": rng.choice(CONTOURS),
            "timbre": rng.choice(TIMBRES),
        }

    def captions(self, scene: dict, rng: random.Random) -> list[str]:
        n = scene["count"]
        singular, plural = CONTOUR_VERBS[scene["contour"]]
        captions = []
        for template in rng.sample(CAPTION_TEMPLATES, 5):
            captions.append(template.format(
                n=rng.choice(SINGLE_COUNT_PHRASES) if n == 1 else COUNT_WORDS[n],
                m=scene["contour"],
                p=scene["pitch"],
                t=rng.choice(TIMBRE_WORDS[scene["timbre"]]),
                noun=rng.choice(NOUNS[min(n, 2)]),
                be="is" if n == 1 else "are",
                v=singular if n == 1 else plural,
                v1=singular,
            ))
        return captions

    def questions(self, scene: dict, rng: random.Random) -> list[QA]:
        qas = [
            QA(rng.choice(QUESTION_TEMPLATES["count"]), str(scene["count"]), "count", "number"),
            QA(rng.choice(QUESTION_TEMPLATES["pitch"]), scene["pitch"], "pitch", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["contour"]), scene["contour"], "contour", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["timbre"]), scene["timbre"], "timbre", "other"),
        ]
        attribute = rng.choice(list(CHECK_TEMPLATES))
        values = {"count": COUNTS, "pitch": PITCHES, "contour": CONTOURS, "timbre": TIMBRES}[attribute]
        check_yes = rng.random() < 0.5
        value = scene[attribute] if check_yes else rng.choice([v for v in values if v != scene[attribute]])
        asked = COUNT_WORDS.get(value, "one") if attribute == "count" else value
        if attribute == "count" and value == 1:
            question = "is there only one sound?"
        else:
            question = CHECK_TEMPLATES[attribute].format(value=asked)
        qas.append(QA(question, "yes" if check_yes else "no", "check", "yes/no"))
        return qas

    def attributes(self, scene: dict) -> dict[str, str]:
        return {"count": str(scene["count"]), "pitch": scene["pitch"], "contour": scene["contour"],
                "timbre": scene["timbre"]}

    def attribute_vocabulary(self) -> dict[str, dict[str, list[str]]]:
        return {
            "count": {"1": ["1", "one", "single"] + _article_phrases(), "2": ["2", "two", "twice"],
                      "3": ["3", "three"]},
            "pitch": {p: [p] for p in PITCHES},
            "contour": {"steady": ["steady"], "rising": ["rising", "rises", "rise"],
                        "falling": ["falling", "falls", "fall"]},
            "timbre": {t: list(words) for t, words in TIMBRE_WORDS.items()},
        }

    def render(self, scene: dict, rng: random.Random, path: str | Path) -> None:
        write_wav(render_waveform(scene, rng), path)


def render_waveform(scene: dict, rng: random.Random) -> np.ndarray:
    """The clip as float32 samples in [-1, 1] at SAMPLE_RATE, deterministic given the rng state."""
    noise_rng = np.random.default_rng(rng.getrandbits(63))
    count = scene["count"]
    lengths = [rng.uniform(*TONE_SECONDS[count]) for _ in range(count)]
    gaps = [rng.uniform(*GAP_SECONDS) for _ in range(count - 1)]
    start = rng.uniform(EDGE_SECONDS, CLIP_SECONDS - EDGE_SECONDS - sum(lengths) - sum(gaps))
    centre = rng.uniform(*CENTRE_HZ[scene["pitch"]])
    amplitude = rng.uniform(0.25, 0.5)
    clip = np.zeros(round(CLIP_SECONDS * SAMPLE_RATE))
    for k, length in enumerate(lengths):
        tone = amplitude * _tone(centre, length, scene["contour"], scene["timbre"])
        begin = round(start * SAMPLE_RATE)
        clip[begin:begin + tone.size] += tone
        start += length + (gaps[k] if k < len(gaps) else 0.0)
    clip += noise_rng.normal(0, rng.uniform(0.003, 0.01), clip.size)  # light background hiss
    return np.clip(clip, -1, 1).astype(np.float32)


def _tone(centre: float, seconds: float, contour: str, timbre: str) -> np.ndarray:
    """One tone of peak amplitude about 1, with its pitch following the contour on a log scale."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    slope = {"steady": 0.0, "rising": 1.0, "falling": -1.0}[contour] * SWEEP_OCTAVES
    frequency = centre * 2.0 ** (slope * (t / seconds - 0.5))
    phase = 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE
    if timbre == "pure":
        wave_ = np.sin(phase)
    else:  # a band-limited square wave: odd harmonics at 1/k, none above the ceiling (no aliasing)
        top = frequency.max()
        harmonics = [k for k in range(1, 64, 2) if k * top < HARMONIC_CEILING_HZ]
        wave_ = sum(np.sin(k * phase) / k for k in harmonics) * (4 / np.pi) / 1.18  # 1.18: Gibbs overshoot
    ramp = round(RAMP_SECONDS * SAMPLE_RATE)
    envelope = np.ones(t.size)
    envelope[:ramp] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[-ramp:] = envelope[:ramp][::-1]
    return wave_ * envelope


def write_wav(samples: np.ndarray, path: str | Path) -> None:
    """16-bit PCM mono WAV at SAMPLE_RATE (stdlib `wave`: no header field varies between runs)."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())


WORLDS.register("audio")(AudioWorld)
