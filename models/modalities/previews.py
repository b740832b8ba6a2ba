"""Inline thumbnails for the predictions page (a PNG data URI: the page stays one self-contained file)."""
from __future__ import annotations

import base64
import io

from PIL import Image

THUMBNAIL = 160


def png_data_uri(image: Image.Image) -> str:
    image = image.copy()
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    if max(image.size) < 96:  # tiny synthetic images: enlarge, sharp pixels
        scale = 96 // max(image.size) + 1
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
