"""Synthetic "worlds": tiny generators of scenes, their captions, questions and media for the offline demo.

A world samples a scene as plain attributes (no rendering), states it in words (captions, QA) and renders
it to a media file. Text and media come from the same scene, so a text-only LM can be pretrained on the
world's language while the media stay unseen until the bridge is trained. Image, video and audio worlds
share this interface; each registers itself in `WORLDS` from its own `*_world.py` module.
"""
from __future__ import annotations

import importlib
import pkgutil
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from epalm.common.registry import Registry

ANSWER_TYPES = ("yes/no", "number", "other")


@dataclass(frozen=True)
class QA:
    """One question about a scene whose answer needs the media (VQA v2 answer types)."""

    question: str
    answer: str
    question_type: str
    answer_type: str

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"QA {self.question!r}: answer_type {self.answer_type!r} is not one of {ANSWER_TYPES}")


class World(ABC):
    """A generator of scenes of one modality.

    Attributes set by subclasses:
        name: registry name ("image", "video", "audio").
        modality: "image", "video" or "audio".
        media_extension: suffix of rendered files (".jpg", ".mp4", ".wav").
    """

    name: str
    modality: str
    media_extension: str

    @abstractmethod
    def sample_scene(self, rng: random.Random) -> dict:
        """Draw a scene: its attributes only (JSON-serialisable), nothing rendered."""

    @abstractmethod
    def captions(self, scene: dict, rng: random.Random) -> list[str]:
        """Five different paraphrases, each stating every attribute of the scene (lowercase, no final period)."""

    @abstractmethod
    def questions(self, scene: dict, rng: random.Random) -> list[QA]:
        """The candidate questions about the scene, at least one per question type."""

    @abstractmethod
    def attributes(self, scene: dict) -> dict[str, str]:
        """Ground-truth value of every attribute a caption must state (keys of `attribute_vocabulary`)."""

    @abstractmethod
    def attribute_vocabulary(self) -> dict[str, dict[str, list[str]]]:
        """attribute -> value -> the surface phrases that state that value in a caption.

        Designed so that a phrase of one value never occurs in a caption of another value of the same
        attribute (see dataset/metrics/attribute_accuracy.py for the matching rule).
        """

    @abstractmethod
    def render(self, scene: dict, rng: random.Random, path: str | Path) -> None:
        """Write the scene's media file to `path` (deterministic given the rng state)."""


WORLDS: Registry[World] = Registry("synthetic world")


def discover_worlds() -> list[str]:
    """Import every `demo/synthetic/*_world.py` so its world registers itself; return the registered names."""
    package = importlib.import_module("epalm.demo.synthetic")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_world"):
            importlib.import_module(f"epalm.demo.synthetic.{module.name}")
    return WORLDS.names()
