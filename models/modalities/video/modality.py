"""The video modality: PyAV decoding of T frames (one per equal segment) and the clip transform."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from epalm.models.modalities.base import Modality, register_modality
from epalm.models.modalities.previews import png_data_uri
from epalm.models.modalities.video.decode import load_video_frames

TRAIN_CROP_SCALE = (0.5, 1.0)
PREVIEW_FRAMES = 4


class VideoTransform:
    """Frames `(T, H, W, 3)` uint8 (or a list of PIL images) -> normalised `(3, T, S, S)` float tensor.

    Test: each frame resized to S x S (bicubic). Train: RandomResizedCrop(scale 0.5-1), horizontal flip and
    RandAugment (2 ops, magnitude 9), with ONE draw of the random parameters for the whole clip, so the
    frames stay a coherent video.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], train: bool):
        bicubic = v2.InterpolationMode.BICUBIC
        if train:
            spatial = [
                v2.RandomResizedCrop(size, scale=TRAIN_CROP_SCALE, interpolation=bicubic, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandAugment(num_ops=2, magnitude=9, interpolation=v2.InterpolationMode.BILINEAR),
            ]
        else:
            spatial = [v2.Resize((size, size), interpolation=bicubic, antialias=True)]
        # v2 transforms treat a (T, C, H, W) tensor as one image batch and draw their parameters once
        self.transform = v2.Compose(
            [*spatial, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
        )

    def __call__(self, frames: np.ndarray | Sequence[Image.Image]) -> torch.Tensor:
        if not isinstance(frames, np.ndarray):
            frames = np.stack([np.asarray(frame.convert("RGB")) for frame in frames])
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"video frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W)
        return self.transform(clip).permute(1, 0, 2, 3).contiguous()  # (3, T, S, S)


@register_modality
class VideoModality(Modality):
    name, placeholder, data_key = "video", "<video>", "videos"

    def decode(self, path: str, train: bool, rng: np.random.Generator | None, encoder_cfg) -> Any:
        """`encoder_cfg.num_frames` frames `(T, H, W, 3)`: random within each segment in training, the middles
        at test time."""
        return load_video_frames(path, encoder_cfg.num_frames, train, rng)

    def preview_html(self, path: str, page_dir: Path) -> str:
        frames = load_video_frames(path, PREVIEW_FRAMES, train=False)
        return f'<img src="{png_data_uri(Image.fromarray(np.concatenate(list(frames), axis=1)))}">'
