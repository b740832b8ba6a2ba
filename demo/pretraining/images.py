"""Image-only pretraining data for the demo ViT: image-world scenes rendered to JPEG, decoded, with attribute labels.

Rendered through the world's own `render` (JPEG and all), so the pixels are what the demo's data set holds, from
an rng stream of its own (`demo-vit-pretraining/<seed>/<split>/<index>`): never the demo data set's images.
"""
from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from epalm.demo.synthetic.worlds import WORLDS, World, discover_worlds

WORLD = "image"


@dataclass
class ImagePool:
    """`pixels`: (N, 3, S, S) uint8; `labels`: attribute -> (N,) index into `classes[attribute]`."""

    pixels: torch.Tensor
    labels: dict[str, torch.Tensor]
    classes: dict[str, list[str]]

    def __len__(self) -> int:
        return self.pixels.shape[0]


def image_world() -> World:
    discover_worlds()
    return WORLDS.build(WORLD)


def attribute_classes(world: World) -> dict[str, list[str]]:
    return {attribute: sorted(values) for attribute, values in world.attribute_vocabulary().items()}


def render_image(world: World, seed: int, split: str, index: int, scratch: Path) -> tuple[Image.Image, dict[str, str]]:
    """One scene, rendered and decoded exactly as the demo reads its files; returns the image and its attributes."""
    rng = random.Random(f"demo-vit-pretraining/{seed}/{split}/{index}")
    scene = world.sample_scene(rng)
    path = scratch / f"image{world.media_extension}"
    world.render(scene, rng, path)
    with Image.open(path) as image:
        return image.convert("RGB"), world.attributes(scene)


def render_pool(seed: int, split: str, n: int, progress: bool = True) -> ImagePool:
    world = image_world()
    classes = attribute_classes(world)
    pixels, labels = [], {attribute: [] for attribute in classes}
    with tempfile.TemporaryDirectory(prefix="demo-vit-") as scratch:
        for index in tqdm(range(n), desc=f"rendering {split} images", unit="img", disable=not progress):
            image, attributes = render_image(world, seed, split, index, Path(scratch))
            pixels.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
            for attribute, value in attributes.items():
                labels[attribute].append(classes[attribute].index(value))
    return ImagePool(torch.stack(pixels), {a: torch.tensor(v) for a, v in labels.items()}, classes)


def sample_images(seed: int, split: str, n: int) -> list[Image.Image]:
    """The first `n` images of a pool as PIL images (to check the pool's tensors against the encoder's transform)."""
    world = image_world()
    with tempfile.TemporaryDirectory(prefix="demo-vit-") as scratch:
        return [render_image(world, seed, split, index, Path(scratch))[0] for index in range(n)]
