"""The video world: one coloured shape crossing a 32x32 clip in one direction, which may change colour midway.

Kept this small on purpose, like the image world: the whole clip is four attributes (shape, start colour,
direction, colour change), so one visual token can carry it. But three of them need time: no single frame
shows where the shape is going (a middle frame shows only where it is), nor what colour it turns; they
need frames from the start and the end of the clip.
"""
from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from epalm.demo.synthetic.worlds import QA, WORLDS, World

FRAME_SIZE = 32  # even, as H.264 needs
NUM_FRAMES = 16  # eP-ALM samples 16 frames for captioning, 8 for QA: one per segment of this clip
FPS = 8
COLOURS = {"red": (215, 35, 35), "green": (35, 160, 55), "blue": (40, 70, 215), "yellow": (230, 195, 25)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
# (dx, dy) in image coordinates, y pointing down.
STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
CHANGE_SHARE = 0.5  # of clips whose shape changes colour: "does it change colour?" is half yes

DIRECTION_PHRASES = {"left": ("to the left", "left", "leftwards"), "right": ("to the right", "right", "rightwards"),
                     "up": ("up", "upwards"), "down": ("down", "downwards")}
TURN_VERBS = ("turns", "becomes", "changes to")
STAY_VERBS = ("stays", "remains")

# {c} start colour, {s} shape: always adjacent ("red square"), which is how the start colour is told apart
# from the end colour, which always follows a verb of TURN_VERBS / STAY_VERBS ({e}: "turns blue", "stays red").
# {d}: a direction phrase. No other word of the vocabulary ("up", "left", "a red" ...) appears in a template.
CAPTION_TEMPLATES = (
    "a {c} {s} moves {d} and {e}",
    "the {c} {s} slides {d} and {e}",
    "a {c} {s} travels {d} and then {e}",
    "there is a {c} {s} moving {d} that {e}",
    "the video shows a {c} {s} moving {d} as it {e}",
    "a {c} {s} going {d} which {e}",
    "the clip has a {c} {s} that moves {d} and {e}",
)
# Phrased the same whatever the clip, so the question alone tells nothing about the answer.
QUESTION_TEMPLATES = {
    "direction": ("which way does the shape move?", "in which direction does the object move?",
                  "where does the shape go?", "which direction is the shape moving in?"),
    "start_colour": ("what colour is the shape at the start?", "what colour is the object at first?",
                     "which colour does the shape have at the beginning?"),
    "end_colour": ("what colour is the shape at the end?", "what colour is the object in the end?",
                   "which colour does the shape have at the end?"),
    "shape": ("what shape is moving?", "what kind of shape is in the video?", "which shape is shown?",
              "what shape is the object?"),
    "change": ("does the shape change colour?", "does the object change its colour?",
               "is the colour different at the end?"),
}
MOVES_TEMPLATES = ("does the shape move {d}?", "is the object moving {d}?")
MOVES_PHRASES = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}

MIN_SIZE, MAX_SIZE = 8, 11  # side of the shape's bounding box, pixels
MIN_TRAVEL, MAX_TRAVEL = 12, 18  # pixels from the first frame to the last
CHANGE_FRAMES = (6, 10)  # the colour changes at a frame in this range [lo, hi): at least 6 frames of each colour


def change_phrase(scene: dict) -> str:
    """The `change` attribute's value: "turns <end colour>" or "stays <colour>"."""
    end = scene["end_colour"]
    return f"stays {end}" if end == scene["colour"] else f"turns {end}"


class VideoWorld(World):
    name = "video"
    modality = "video"
    media_extension = ".mp4"

    def sample_scene(self, rng: random.Random) -> dict:
        colour = rng.choice(list(COLOURS))
        changes = rng.random() < CHANGE_SHARE
        return {
            "shape": rng.choice(SHAPES),
            "colour": colour,
            "end_colour": rng.choice([c for c in COLOURS if c != colour]) if changes else colour,
            "direction": rng.choice(DIRECTIONS),
        }

    def captions(self, scene: dict, rng: random.Random) -> list[str]:
        end = scene["end_colour"]
        captions = []
        for template in rng.sample(CAPTION_TEMPLATES, 5):
            verb = rng.choice(STAY_VERBS if end == scene["colour"] else TURN_VERBS)
            captions.append(template.format(c=scene["colour"], s=scene["shape"],
                                            d=rng.choice(DIRECTION_PHRASES[scene["direction"]]), e=f"{verb} {end}"))
        return captions

    def questions(self, scene: dict, rng: random.Random) -> list[QA]:
        changes = scene["end_colour"] != scene["colour"]
        qas = [
            QA(rng.choice(QUESTION_TEMPLATES["direction"]), scene["direction"], "direction", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["start_colour"]), scene["colour"], "start_colour", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["end_colour"]), scene["end_colour"], "end_colour", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["shape"]), scene["shape"], "shape", "other"),
            QA(rng.choice(QUESTION_TEMPLATES["change"]), "yes" if changes else "no", "change", "yes/no"),
        ]
        # Half ask about the true direction (yes), half about another one (no).
        moves_yes = rng.random() < 0.5
        direction = scene["direction"] if moves_yes else rng.choice([d for d in DIRECTIONS if d != scene["direction"]])
        qas.append(QA(rng.choice(MOVES_TEMPLATES).format(d=MOVES_PHRASES[direction]), "yes" if moves_yes else "no",
                      "moves", "yes/no"))
        return qas

    def attributes(self, scene: dict) -> dict[str, str]:
        return {"shape": scene["shape"], "colour": scene["colour"], "direction": scene["direction"],
                "change": change_phrase(scene)}

    def attribute_vocabulary(self) -> dict[str, dict[str, list[str]]]:
        return {
            "shape": {s: [s, s + "s"] for s in SHAPES},
            # The start colour is the colour word in front of the shape noun.
            "colour": {c: [f"{c} {s}" for s in SHAPES] + [f"{c} {s}s" for s in SHAPES] + [f"{c} shape", f"{c} object"]
                       for c in COLOURS},
            "direction": {d: [d, d + "wards"] for d in DIRECTIONS},
            # Whether the colour changes and into which colour, said with a verb.
            "change": {**{f"turns {c}": [f"{verb} {c}" for verb in TURN_VERBS] + [f"turning {c}", f"turned {c}"]
                          for c in COLOURS},
                       **{f"stays {c}": [f"{verb} {c}" for verb in STAY_VERBS] + [f"staying {c}", f"stayed {c}"]
                          for c in COLOURS}},
        }

    def render(self, scene: dict, rng: random.Random, path: str | Path) -> None:
        frames = render_frames(scene, rng)
        write_mp4(frames, path)


def render_frames(scene: dict, rng: random.Random) -> np.ndarray:
    """The clip as `(NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)` uint8 RGB, deterministic given the rng state."""
    noise_rng = np.random.default_rng(rng.getrandbits(63))
    grey = rng.uniform(210, 240)
    tint = np.array([rng.uniform(-10, 10) for _ in range(3)])
    # One still background: only the shape moves, so motion is the only change between frames.
    background = np.clip(grey + tint + noise_rng.normal(0, 4, (FRAME_SIZE, FRAME_SIZE, 3)), 0, 255).astype(np.uint8)
    start_fill, end_fill = (_jittered(COLOURS[scene[key]], rng) for key in ("colour", "end_colour"))
    change_frame = rng.randrange(*CHANGE_FRAMES)
    size = rng.randint(MIN_SIZE, MAX_SIZE)
    travel = rng.randint(MIN_TRAVEL, min(MAX_TRAVEL, FRAME_SIZE - 2 - size))
    (x0, y0), (dx, dy) = _start(scene["direction"], size, travel, rng), STEPS[scene["direction"]]
    frames = []
    for index in range(NUM_FRAMES):
        progress = travel * index / (NUM_FRAMES - 1)
        x, y = round(x0 + dx * progress), round(y0 + dy * progress)
        image = Image.fromarray(background)
        _draw(ImageDraw.Draw(image), scene["shape"], x, y, size, start_fill if index < change_frame else end_fill)
        frames.append(np.asarray(image))
    return np.stack(frames)


def _jittered(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, ...]:
    return tuple(int(np.clip(v + rng.randint(-15, 15), 0, 255)) for v in rgb)


def _start(direction: str, size: int, travel: int, rng: random.Random) -> tuple[int, int]:
    """Top-left corner on the first frame, so that the whole path stays 1 pixel inside the frame."""
    lo, hi = 1, FRAME_SIZE - 1 - size  # inclusive range of a corner coordinate
    along = rng.randint(lo, hi - travel)
    across = rng.randint(lo, hi)
    if direction in ("left", "up"):  # moving towards smaller coordinates: start as far the other way
        along += travel
    return (along, across) if direction in ("left", "right") else (across, along)


def _draw(draw: ImageDraw.ImageDraw, shape: str, x0: int, y0: int, size: int, fill: tuple[int, ...]) -> None:
    x1, y1 = x0 + size - 1, y0 + size - 1
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:
        draw.polygon(((x0, y1), (x1, y1), ((x0 + x1) / 2, y0)), fill=fill)


def write_mp4(frames: np.ndarray, path: str | Path) -> None:
    """H.264 at 4:4:4 (full-resolution colour: 4:2:0 would halve the small shapes' chroma), near-lossless.

    Identical bytes run to run need x264's plain C code (`asm=0`): its SIMD routines read memory they never
    wrote on these tiny frames, so with them about one clip in a hundred came out different (and decoded to
    different pixels) depending on the process's heap. One thread, and explicit frame timestamps, too.
    """
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": "12", "preset": "veryfast", "x264-params": "asm=0"}
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv444p")
            picture.pts = index
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():  # flush the delayed frames
            container.mux(packet)


WORLDS.register("video")(VideoWorld)
