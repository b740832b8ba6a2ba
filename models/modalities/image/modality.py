"""The image modality: Pillow decoding (decode.py: every mode, EXIF orientation, transparency) and timm's transforms
(eP-ALM's crop, flip and RandAugment). Training, evaluation, the feature cache, chat and the predictions pages all
decode through `ImageModality.decode` / `preview_html`, so a file opens the same everywhere."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from timm.data import create_transform

from epalm.models.modalities.base import Modality, register_modality
from epalm.models.modalities.image.decode import image_size, load_image
from epalm.models.modalities.previews import png_data_uri

# Train-time augmentation of the eP-ALM reference: RandomResizedCrop(scale 0.5-1), flip, RandAugment.
TRAIN_CROP_SCALE = (0.5, 1.0)
RAND_AUGMENT = "rand-m9-n2-mstd0.5"


def image_transform(size: int, interpolation: str, mean: Sequence[float], std: Sequence[float],
                    train: bool) -> Callable[[Any], torch.Tensor]:
    """PIL image -> `(3, S, S)`. Test: squash-resize to S x S (the reference's Resize((S, S))); train: crop,
    flip, RandAugment."""
    if train:
        return create_transform(size, is_training=True, scale=TRAIN_CROP_SCALE, hflip=0.5, auto_augment=RAND_AUGMENT,
                                interpolation=interpolation, mean=mean, std=std, re_prob=0.0)
    return create_transform(size, is_training=False, crop_pct=1.0, crop_mode="squash", interpolation=interpolation,
                            mean=mean, std=std)


@register_modality
class ImageModality(Modality):
    name, placeholder, data_key = "image", "<image>", "images"

    def decode(self, path: str, train: bool, rng: np.random.Generator | None, encoder_cfg) -> Any:
        return load_image(path)

    def probe(self, path: str) -> tuple[int, int]:
        return image_size(path)

    def preview_html(self, path: str, page_dir: Path) -> str:
        return f'<img src="{png_data_uri(load_image(path))}">'
