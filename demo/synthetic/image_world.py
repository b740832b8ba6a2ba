"""The image world: one group of 1-3 identical coloured shapes in the left or right half of a 48x48 picture.

Kept this small on purpose: the whole scene is four attributes (count, colour, shape, side), so one visual
token can carry it, and a ViT trained from scratch in minutes on 2 CPU cores can see it.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from epalm.demo.synthetic.worlds import QA, WORLDS, World

IMAGE_SIZE = 48
COUNTS = (1, 2, 3)
COLOURS = {"red": (215, 35, 35), "green": (35, 160, 55), "blue": (40, 70, 215), "yellow": (230, 195, 25)}
SHAPES = ("circle", "square", "triangle")
SIDES = ("left", "right")
COUNT_WORDS = {2: "two", 3: "three"}
# Count 1 is said as "a", "one" or "a single"; the vocabulary lists "a" only inside "a <colour>" / "a <shape>",
# so the article of "a single" or of any other phrase never reads as a count.
SINGLE_COUNT_PHRASES = ("a", "one", "a single")

# {n}: count phrase, {c}: colour, {s}: shape noun (plural when n > 1), {be}: is/are, {side}: left/right.
CAPTION_TEMPLATES = (
    "{n} {c} {s} on the {side}",
    "there {be} {n} {c} {s} on the {side} side",
    "{n} {c} {s} in the {side} half of the image",
    "the image shows {n} {c} {s} on the {side}",
    "on the {side} there {be} {n} {c} {s}",
    "{n} {c} {s} placed on the {side} side of the picture",
    "the picture has {n} {c} {s} on its {side} side",
)
# Phrased the same whatever the scene, so the question alone tells nothing about the answer.
QUESTION_TEMPLATES = {
    "colour": ("what colour are the shapes?", "which colour do the shapes have?",
               "what is the colour of the objects?", "what colour are the objects in the image?"),
    "shape": ("what shape are the objects?", "which shape is shown?",
              "what kind of shape is in the image?", "what shape do the objects have?"),
    "count": ("how many shapes are there?", "how many objects are in the image?",
              "what is the number of shapes?", "how many shapes can you see?"),
    "where": ("which side are the shapes on?", "are the shapes on the left or the right?",
              "where are the objects?", "on which side of the image are the shapes?"),
}
EXIST_COLOUR_TEMPLATES = ("are there {c} shapes?", "is there anything {c}?", "are any of the objects {c}?")
EXIST_SHAPE_TEMPLATES = ("is there a {s}?", "are there any {s}s?", "does the image contain a {s}?")

MIN_SIZE, MAX_SIZE = 9, 13  # side of an object's bounding box, pixels
GAP = 3  # free pixels between objects, so they stay separate blobs after JPEG compression


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class ImageWorld(World):
    name = "image"
    modality = "image"
    media_extension = ".jpg"

    def sample_scene(self, rng: random.Random) -> dict:
        return {
            "count": rng.choice(COUNTS),
            "colour": rng.choice(list(COLOURS)),
            "shape": rng.choice(SHAPES),
            "side": rng.choice(SIDES),
        }

    def captions(self, scene: dict, rng: random.Random) -> list[str]:
        n = scene["count"]
        captions = []
        for template in rng.sample(CAPTION_TEMPLATES, 5):
            captions.append(template.format(
                n=rng.choice(SINGLE_COUNT_PHRASES) if n == 1 else COUNT_WORDS[n],
                c=scene["colour"],
                s=scene["shape"] if n == 1 else scene["shape"] + "s",
                be="is" if n == 1 else "are",
                side=scene["side"],
            ))
        return captions

    def questions(self, scene: dict, rng: random.Random) -> list[QA]:
        qas = [
            QA(rng.choice(QUESTION_TEMPLATES["colour"]), scene["colour"], "colour", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["shape"]), scene["shape"], "shape", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["count"]), str(scene["count"]), "count", "number"),
            QA(rng.choice(QUESTION_TEMPLATES["where"]), scene["side"], "where", "other"),
        ]
        # Existence questions: half ask about the true value (yes), half about another one (no).
        colour_yes = rng.random() < 0.5
        colour = scene["colour"] if colour_yes else rng.choice([c for c in COLOURS if c != scene["colour"]])
        qas.append(QA(rng.choice(EXIST_COLOUR_TEMPLATES).format(c=colour), "yes" if colour_yes else "no",
                      "exist", "yes/no"))
        shape_yes = rng.random() < 0.5
        shape = scene["shape"] if shape_yes else rng.choice([s for s in SHAPES if s != scene["shape"]])
        qas.append(QA(rng.choice(EXIST_SHAPE_TEMPLATES).format(s=shape), "yes" if shape_yes else "no",
                      "exist", "yes/no"))
        return qas

    def attributes(self, scene: dict) -> dict[str, str]:
        return {"count": str(scene["count"]), "colour": scene["colour"], "shape": scene["shape"],
                "side": scene["side"]}

    def attribute_vocabulary(self) -> dict[str, dict[str, list[str]]]:
        nouns = list(COLOURS) + list(SHAPES)
        return {
            "count": {
                "1": ["1", "one", "single"] + [f"{_article(w)} {w}" for w in nouns],
                "2": ["2", "two"],
                "3": ["3", "three"],
            },
            "colour": {c: [c] for c in COLOURS},
            "shape": {s: [s, s + "s"] for s in SHAPES},
            "side": {s: [s] for s in SIDES},
        }

    def render(self, scene: dict, rng: random.Random, path: str | Path) -> None:
        noise_rng = np.random.default_rng(rng.getrandbits(63))
        grey = rng.uniform(210, 240)
        tint = np.array([rng.uniform(-10, 10) for _ in range(3)])
        background = grey + tint + noise_rng.normal(0, 4, (IMAGE_SIZE, IMAGE_SIZE, 3))
        image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        fill = tuple(int(np.clip(v + rng.randint(-15, 15), 0, 255)) for v in COLOURS[scene["colour"]])
        for x0, y0, size in _place(scene["count"], scene["side"], rng):
            x1, y1 = x0 + size - 1, y0 + size - 1
            if scene["shape"] == "circle":
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif scene["shape"] == "square":
                draw.rectangle((x0, y0, x1, y1), fill=fill)
            else:
                draw.polygon(((x0, y1), (x1, y1), ((x0 + x1) / 2, y0)), fill=fill)
        # 4:4:4 chroma keeps the small shapes' colours clean.
        image.save(path, format="JPEG", quality=95, subsampling=0)


def _place(count: int, side: str, rng: random.Random) -> list[tuple[int, int, int]]:
    """Non-overlapping bounding boxes (x0, y0, size) inside one half, GAP pixels apart, 1 pixel off the borders."""
    half = IMAGE_SIZE // 2
    x_lo = 1 if side == "left" else half + 1
    x_hi = half - 1 if side == "left" else IMAGE_SIZE - 1  # exclusive
    max_size = MAX_SIZE
    while True:
        boxes: list[tuple[int, int, int]] = []
        for _ in range(200):
            size = rng.randint(MIN_SIZE, max_size)
            x0 = rng.randint(x_lo, x_hi - size)
            y0 = rng.randint(1, IMAGE_SIZE - 1 - size)
            if all(x0 >= bx + bs + GAP or bx >= x0 + size + GAP or y0 >= by + bs + GAP or by >= y0 + size + GAP
                   for bx, by, bs in boxes):
                boxes.append((x0, y0, size))
                if len(boxes) == count:
                    return boxes
        max_size = max(MIN_SIZE, max_size - 1)  # crowded draw: retry with smaller objects


WORLDS.register("image")(ImageWorld)
