"""Image decoding with Pillow."""
from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from epalm.common.errors import MediaDecodeError


def load_image(path: str) -> Image.Image:
    """Decode the whole image (truncated files fail here, not later in a transform) as RGB."""
    if not os.path.isfile(path):
        raise MediaDecodeError(path, "file not found")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() loads every pixel and detaches from the file
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as error:
        # Pillow reports bad data as OSError ("truncated"), ValueError or SyntaxError depending on the plugin
        raise MediaDecodeError(path, f"not a decodable image ({error})") from error
