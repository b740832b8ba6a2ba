"""The synthetic video and audio worlds: what a rendered clip shows or sounds like, what the captions and
questions state, and the text corpus they share with the LM's pretraining."""
from __future__ import annotations

import itertools
import random
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from epalm.dataset.metrics.attribute_accuracy import attribute_accuracy, parse_attributes
from epalm.demo.synthetic import audio_world, video_world
from epalm.demo.synthetic.audio_world import AudioWorld
from epalm.demo.synthetic.text_corpus import ANSWER_SEP, CONTEXT_SEP, EOS, build_text_corpus
from epalm.demo.synthetic.video_world import VideoWorld
from epalm.demo.synthetic.worlds import QA, WORLDS, discover_worlds
from epalm.models.modalities.video.decode import load_video_frames

VIDEO_SMALL = dict(n_train=10, n_val=4, n_test=5, questions_per_video=3)
AUDIO_SMALL = dict(n_train=10, n_val=4, n_test=5)
VIDEO, AUDIO = VideoWorld(), AudioWorld()
VIDEO_VOCAB, AUDIO_VOCAB = VIDEO.attribute_vocabulary(), AUDIO.attribute_vocabulary()



def _builder_questions(world, n_scenes: int, per_scene: int) -> dict[str, Counter]:
    """Answers per question type, drawn as the builders draw them (without rendering)."""
    rng = random.Random(0)
    answers: dict[str, Counter] = {}
    for _ in range(n_scenes):
        scene = world.sample_scene(rng)
        world.captions(scene, rng)
        for qa in rng.sample(world.questions(scene, rng), per_scene):
            answers.setdefault(qa.question_type, Counter())[qa.answer] += 1
    return answers


@pytest.mark.parametrize("world, types", [
    (VIDEO, {"direction", "start_colour", "end_colour", "shape", "change", "moves"}),
    (AUDIO, {"count", "pitch", "contour", "timbre", "check"}),
])
def test_no_constant_answer_gets_more_than_about_half_of_a_question_type(world, types):
    answers = _builder_questions(world, 3000, 3)
    assert set(answers) == types
    for qtype, counts in answers.items():
        assert counts.most_common(1)[0][1] / sum(counts.values()) <= 0.55, (qtype, counts)
    # Captions too: no attribute value covers more than about half of the clips.
    rng = random.Random(1)
    for attribute, values in zip(*_attribute_counts(world, rng)):
        assert values.most_common(1)[0][1] / sum(values.values()) <= 0.55, (attribute, values)


def _attribute_counts(world, rng: random.Random) -> tuple[list[str], list[Counter]]:
    counts: dict[str, Counter] = {}
    for _ in range(2000):
        for attribute, value in world.attributes(world.sample_scene(rng)).items():
            counts.setdefault(attribute, Counter())[value] += 1
    return list(counts), list(counts.values())


# ---------------------------------------------------------------- the video world


def _track(frames: np.ndarray) -> list[dict]:
    """Per frame: the one saturated blob (the background is light and nearly grey), its centre, colour and fill."""
    track = []
    for frame in frames.astype(int):
        mask = frame.max(axis=2) - frame.min(axis=2) > 60
        labels, found = ndimage.label(mask)
        assert found == 1, f"expected one shape, found {found} blobs"
        ys, xs = np.nonzero(mask)
        mean = frame[ys, xs].mean(axis=0)
        track.append({
            "centre": np.array([xs.mean(), ys.mean()]),
            "colour": min(video_world.COLOURS, key=lambda c: np.linalg.norm(mean - np.array(video_world.COLOURS[c]))),
            "fill": len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)),
        })
    return track


def test_rendered_clip_shows_the_stated_shape_motion_and_colours(tmp_path):
    colours, changed = list(video_world.COLOURS), 0
    combos = itertools.product(video_world.SHAPES, video_world.DIRECTIONS, range(len(colours)), (False, True))
    for i, (shape, direction, first, changes) in enumerate(combos):
        # Every start colour, with no change and with each of the three changes (cycling over the clips).
        colour, end_colour = colours[first], colours[(first + (1 + i // 2 % 3) * changes) % len(colours)]
        scene = {"shape": shape, "colour": colour, "end_colour": end_colour, "direction": direction}
        path = tmp_path / f"{i}.mp4"
        VIDEO.render(scene, random.Random(i), path)
        frames = load_video_frames(str(path), video_world.NUM_FRAMES, train=False)  # every frame of the clip
        assert frames.shape == (16, 32, 32, 3)
        track = _track(frames)
        # Moves steadily the stated way, over a third of the frame (MIN_TRAVEL is 12 px), and not across.
        step = np.array(video_world.STEPS[direction])
        along = [float(t["centre"] @ step) for t in track]
        across = [float(t["centre"] @ step[::-1]) for t in track]
        assert along[-1] - along[0] >= 11, scene
        assert all(b - a >= 0 for a, b in zip(along, along[1:])) and np.ptp(across) <= 1, scene
        # Starts in one colour and, if it changes, switches once, midway, to the other.
        seen = [t["colour"] for t in track]
        assert seen[0] == colour and seen[-1] == end_colour, (scene, seen)
        switch = next((k for k, c in enumerate(seen) if c != colour), None)
        if colour == end_colour:
            assert switch is None, (scene, seen)
        else:
            # at least 6 of the 16 frames in each colour, so every 8-frame sample sees both
            assert 6 <= switch <= 9 and set(seen[switch:]) == {end_colour}, seen
        changed += colour != end_colour
        # Filled share of the bounding box: square 1, circle ~pi/4, triangle ~1/2.
        fill = track[0]["fill"]
        assert ("square" if fill > 0.92 else "circle" if fill > 0.65 else "triangle") == shape, (scene, fill)
    assert changed == 48


def test_one_frame_does_not_tell_the_direction():
    """The middle frame's position says nothing about the direction: both ways pass through the same places.
    (The first and last frames do tell, together: the clip's end frames, not any one frame, carry the answer.)"""
    rng = random.Random(0)
    middles = {d: set() for d in ("left", "right")}
    for _ in range(600):
        direction = rng.choice(("left", "right"))
        scene = {"shape": "square", "colour": "red", "end_colour": "red", "direction": direction}
        frame = video_world.render_frames(scene, rng)[video_world.NUM_FRAMES // 2].astype(int)
        xs = np.nonzero(frame.max(axis=2) - frame.min(axis=2) > 60)[1]
        middles[direction].add((xs.min(), np.ptp(xs)))
    assert len(middles["left"] & middles["right"]) >= 0.8 * min(len(m) for m in middles.values())


def test_video_render_is_deterministic_given_the_rng(tmp_path):
    scene = {"shape": "triangle", "colour": "blue", "end_colour": "yellow", "direction": "down"}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        VIDEO.render(scene, random.Random(seed), tmp_path / f"{name}.mp4")
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert (tmp_path / "a.mp4").read_bytes() != (tmp_path / "c.mp4").read_bytes()


def _video_answer(question: str, scene: dict) -> str:
    """An independent reading of a video question against the scene."""
    keys = {"direction": "direction", "start_colour": "colour", "end_colour": "end_colour", "shape": "shape"}
    for qtype, key in keys.items():
        if question in video_world.QUESTION_TEMPLATES[qtype]:
            return scene[key]
    if question in video_world.QUESTION_TEMPLATES["change"]:
        return "yes" if scene["colour"] != scene["end_colour"] else "no"
    for template in video_world.MOVES_TEMPLATES:
        for direction, phrase in video_world.MOVES_PHRASES.items():
            if question == template.format(d=phrase):
                return "yes" if direction == scene["direction"] else "no"
    raise AssertionError(f"unknown question {question!r}")


# ---------------------------------------------------------------- the audio world


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, 16000)
        return np.frombuffer(handle.readframes(handle.getnframes()), "<i2") / 32767


def _bursts(samples: np.ndarray, hop: int = 160) -> list[tuple[int, int]]:
    """(start, end) sample indices of the loud stretches: 10 ms RMS frames above a quarter of the loudest."""
    rms = np.sqrt(np.mean(samples[: samples.size // hop * hop].reshape(-1, hop) ** 2, axis=1))
    loud = np.append(rms > 0.25 * rms.max(), False)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], loud]).astype(int)))
    return [(start * hop, end * hop) for start, end in zip(edges[::2], edges[1::2])]


def _spectrum(samples: np.ndarray, centre: int) -> tuple[np.ndarray, np.ndarray]:
    window = samples[centre - 256: centre + 256] * np.hanning(512)
    return np.fft.rfftfreq(8192, 1 / 16000), np.abs(np.fft.rfft(window, 8192))


def _pitch(samples: np.ndarray, centre: int) -> float:
    freqs, magnitude = _spectrum(samples, centre)
    return float(freqs[np.argmax(magnitude)])


def test_rendered_clip_sounds_as_stated(tmp_path):
    combos = itertools.product(audio_world.COUNTS, audio_world.PITCHES, audio_world.CONTOURS, audio_world.TIMBRES)
    for i, (count, pitch, contour, timbre) in enumerate(combos):
        scene = {"count": count, "pitch": pitch, "contour": contour, "timbre": timbre}
        path = tmp_path / f"{i}.wav"
        AUDIO.render(scene, random.Random(i), path)
        samples = _read_wav(path)
        assert samples.size == 24000 and np.abs(samples).max() < 1.0
        bursts = _bursts(samples)
        assert len(bursts) == count, (scene, bursts)
        for start, end in bursts:
            length = end - start
            middle = start + length // 2
            f0 = _pitch(samples, middle)
            assert (f0 < 600) if pitch == "low" else (f0 > 700), (scene, f0)
            ratio = _pitch(samples, end - length // 5) / _pitch(samples, start + length // 5)
            heard = "rising" if ratio > 1.3 else "falling" if ratio < 1 / 1.3 else "steady"
            assert heard == contour and (contour != "steady" or abs(ratio - 1) < 0.03), (scene, ratio)
            # A buzzy (square-like) tone has a third harmonic at 1/3 amplitude (1/9 of the energy); a pure one none.
            freqs, magnitude = _spectrum(samples, middle)
            energy = [np.sum(magnitude[(freqs >= k * 0.8 * f0) & (freqs <= k * 1.2 * f0)] ** 2) for k in (1, 3)]
            third = energy[1] / energy[0]
            assert (third > 0.05) if timbre == "buzzy" else (third < 0.01), (scene, third)


def test_audio_render_is_deterministic_given_the_rng(tmp_path):
    scene = {"count": 3, "pitch": "high", "contour": "rising", "timbre": "buzzy"}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        AUDIO.render(scene, random.Random(seed), tmp_path / f"{name}.wav")
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert (tmp_path / "a.wav").read_bytes() != (tmp_path / "c.wav").read_bytes()


def _audio_answer(question: str, scene: dict) -> str:
    """An independent reading of an audio question against the scene."""
    for qtype in ("pitch", "contour", "timbre"):
        if question in audio_world.QUESTION_TEMPLATES[qtype]:
            return scene[qtype]
    if question in audio_world.QUESTION_TEMPLATES["count"]:
        return str(scene["count"])
    if question == "is there only one sound?":
        return "yes" if scene["count"] == 1 else "no"
    for word, number in (("two", 2), ("three", 3)):
        if question == f"are there {word} sounds?":
            return "yes" if scene["count"] == number else "no"
    value = question.rstrip("?").split()[-1]
    if question in (f"is the sound {value}?", f"is the pitch {value}?"):
        attribute = {**{p: "pitch" for p in audio_world.PITCHES}, **{c: "contour" for c in audio_world.CONTOURS},
                     **{t: "timbre" for t in audio_world.TIMBRES}}[value]
        return "yes" if scene[attribute] == value else "no"
    raise AssertionError(f"unknown question {question!r}")


# ---------------------------------------------------------------- text of both worlds


@pytest.mark.parametrize("world, answer", [(VIDEO, _video_answer), (AUDIO, _audio_answer)])
def test_captions_state_exactly_the_attributes_and_questions_are_answered_by_the_scene(world, answer):
    vocabulary = world.attribute_vocabulary()
    rng = random.Random(0)
    for _ in range(400):
        scene = world.sample_scene(rng)
        truth = {attribute: {value} for attribute, value in world.attributes(scene).items()}
        captions = world.captions(scene, rng)
        assert len(captions) == 5 and len(set(captions)) == 5
        for caption in captions:
            assert caption == caption.lower().strip() and not caption.endswith(".")
            assert parse_attributes(caption, vocabulary) == truth, caption
        qas = world.questions(scene, rng)
        assert all(isinstance(qa, QA) for qa in qas)
        for qa in qas:
            assert qa.answer == answer(qa.question, scene), (qa, scene)


def test_the_video_vocabulary_tells_the_start_colour_from_the_end_colour():
    stated = parse_attributes("a blue circle moves up and turns red", VIDEO_VOCAB)
    assert stated == {"shape": {"circle"}, "colour": {"blue"}, "direction": {"up"}, "change": {"turns red"}}
    assert parse_attributes("a red circle moves up", VIDEO_VOCAB)["change"] == set()  # the end is not stated
    score = attribute_accuracy({0: "a red circle moves up and stays red"},
                               {0: {"shape": "circle", "colour": "blue", "direction": "up", "change": "turns red"}},
                               VIDEO_VOCAB)
    assert score["per_attribute"] == {"change": 0.0, "colour": 0.0, "direction": 1.0, "shape": 1.0}


def test_the_worlds_are_registered():
    assert {"image", "video", "audio"} <= set(discover_worlds())
    assert isinstance(WORLDS.build("video"), VideoWorld) and isinstance(WORLDS.build("audio"), AudioWorld)
    assert (VIDEO.modality, VIDEO.media_extension, AUDIO.modality, AUDIO.media_extension) == \
           ("video", ".mp4", "audio", ".wav")


def _scene_from_context(context: str, world) -> dict:
    """The attributes a corpus context states: a caption, or the attribute values in random order."""
    vocabulary = world.attribute_vocabulary()
    value_words = {word for values in vocabulary.values() for value in values for word in value.split()}
    if not set(context.split()) <= value_words:  # a caption ("a", "tone", "moves" ... are no values)
        stated = parse_attributes(context, vocabulary)
        assert all(len(values) == 1 for values in stated.values()), (context, stated)
        attributes = {attribute: next(iter(values)) for attribute, values in stated.items()}
    else:  # keyword context: every value once; multi-word values ("turns blue") first, then taken out
        attributes, remaining = {}, f" {context} "
        for attribute in sorted(vocabulary, key=lambda a: -max(len(v.split()) for v in vocabulary[a])):
            found = [value for value in vocabulary[attribute] if f" {value} " in remaining]
            assert len(found) == 1, (context, attribute, found)
            attributes[attribute] = found[0]
            remaining = remaining.replace(f" {found[0]} ", " ", 1)
        assert not remaining.strip(), context
    if world is VIDEO:
        return {"shape": attributes["shape"], "colour": attributes["colour"], "direction": attributes["direction"],
                "end_colour": attributes["change"].split()[1]}
    return {**attributes, "count": int(attributes["count"])}


def test_the_text_corpus_draws_from_these_worlds_and_its_answers_follow_from_the_context():
    assert all(any(w in doc for doc in build_text_corpus(seed=0, n_documents=300)) for w in ("turns", "pitch"))
    for world, answer in ((VIDEO, _video_answer), (AUDIO, _audio_answer)):
        docs = build_text_corpus(seed=3, n_documents=300, worlds=[world.name])
        qa_docs = 0
        for doc in docs:
            assert doc.endswith(EOS)
            if ANSWER_SEP not in doc:
                continue
            context, rest = doc.split(CONTEXT_SEP, 1)
            scene = _scene_from_context(context, world)
            for pair in rest[: -len(EOS)].split(EOS):
                question, given = pair.split(ANSWER_SEP)
                assert given == answer(question, scene), doc
            qa_docs += 1
        assert qa_docs > 150
