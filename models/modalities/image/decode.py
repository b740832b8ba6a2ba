"""Image decoding with Pillow: any still image a user has, as the upright, 8-bit, opaque RGB picture it shows.

`Image.open(path).convert("RGB")` gets several kinds of files wrong, silently; `load_image` does not:

- EXIF orientation (a phone photo stored sideways with "rotate 90" in its tags) is applied: the picture is
  upright, as every viewer shows it (Pillow's `ImageOps.exif_transpose`, called only when the tag asks).
- High bit depths (16-bit PNG/TIFF/PGM gray, 32-bit integer and float TIFF: Pillow modes I;16*, I, F) are
  scaled to 8 bits by the range of their sample type (v * 255 / 65535 for 16 bits; floats are taken as 0..1).
  `convert("RGB")` clips them instead: a 16-bit photograph turns white, a float one black. The type's range,
  not the picture's min/max: a dark photo stays dark, and a 16-bit file decodes to the pixels of its 8-bit export.
  (16-bit colour never reaches us: Pillow reads 48-bit PNG and 16-bit RGB TIFF as 8-bit, keeping the high byte.)
- Transparency (RGBA, LA, PA, and palette / gray / RGB colour keys, `info["transparency"]`) is composited over
  BACKGROUND, white as a browser shows a transparent PNG on a white page; `convert("RGB")` shows whatever
  colour the transparent pixels happen to store (often black, or a palette's marker colour).
- CMYK, palette, 1-bit, gray, YCbCr ... go through Pillow's `convert("RGB")`; a multi-frame file (GIF,
  multipage TIFF) gives its first frame. Embedded ICC colour profiles are not applied (as the reference's
  COCO pipelines do not).

Every pixel is decoded inside the call, so a truncated file fails here (MediaDecodeError naming the path and
the reason), not later inside a transform. `image_size` reads only the header: the upright size, for the
data checks that run before training (training/data.py, `python -m epalm.training.check_data`).
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

from epalm.common.errors import MediaDecodeError
from epalm.models.modalities.base import check_media_file

BACKGROUND = (255, 255, 255)  # what transparent pixels become
ORIENTATION_TAG = 0x0112
ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # the EXIF orientations that swap width and height
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
# What Pillow raises for bad data depends on the format's plugin and on where the damage is; DecompressionBombError
# (a header claiming more than twice Image.MAX_IMAGE_PIXELS) is not an OSError.
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


def _reason(error: BaseException) -> str:
    """'not a decodable image (UnidentifiedImageError: cannot identify image file ...)', 'image file is
    truncated', 'DecompressionBombError: Image size ... exceeds limit ...'."""
    return f"not a decodable image ({type(error).__name__}: {error})"


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ORIENTATION_TAG, 1))
    except (*PILLOW_ERRORS, TypeError, KeyError, IndexError):
        return 1  # unreadable EXIF: keep the pixels as stored rather than reject the photograph


def _sample_type_max(image: Image.Image) -> float:
    """White of a high-bit-depth image's sample type. Mode I is Pillow's int32 for several sources: a TIFF says
    its bits and sample format (1 uint, 2 int, 3 float); 16-bit PGM/PPM are rescaled by Pillow to 0..65535."""
    if image.mode.startswith("I;16"):
        return 65535.0
    if image.mode == "F":
        return 1.0
    tags = getattr(image, "tag_v2", None) or {}
    bits, sample_format = tags.get(258), tags.get(339)
    bits = bits[0] if isinstance(bits, (tuple, list)) else bits
    sample_format = sample_format[0] if isinstance(sample_format, (tuple, list)) else sample_format
    if bits == 32:
        return 2147483647.0 if sample_format == 2 else 4294967295.0
    if bits == 16 and sample_format == 2:
        return 32767.0
    return 255.0 if bits == 8 else 65535.0


def high_bit_to_8bit(image: Image.Image) -> np.ndarray:
    """uint8 HxW of an I;16* / I / F image, scaled by its sample type's range (not clipped as convert() does)."""
    values = np.asarray(image)
    top = _sample_type_max(image)
    if image.mode == "I" and top == 4294967295.0:  # Pillow reads uint32 into int32: values >= 2**31 wrapped
        values = values.astype(np.int32, copy=False).view(np.uint32)
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=top, neginf=0.0)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _over_background(rgba: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """An upright, loaded image of any mode -> 8-bit opaque RGB (a new image)."""
    key = image.info.get("transparency")
    if image.mode in _HIGH_BIT_MODES:
        gray = high_bit_to_8bit(image)
        if key is not None and image.mode != "F" and np.isscalar(key):  # a 16-bit gray PNG's colour key
            alpha = np.where(np.asarray(image) == key, 0, 255).astype(np.uint8)
            return _over_background(Image.fromarray(np.dstack([gray, alpha]), "LA").convert("RGBA"), background)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode in _ALPHA_MODES or (key is not None and image.mode in ("P", "L", "RGB", "1")):
        return _over_background(image.convert("RGBA"), background)
    return image.convert("RGB")


def load_image(path: str, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Decode the whole image as upright 8-bit RGB, detached from the file; MediaDecodeError for a missing or
    broken file."""
    path = os.fspath(path)
    check_media_file(path)
    try:
        with Image.open(path) as image:
            image.load()  # every pixel now: truncated data fails here
            if _orientation(image) in range(2, 9):
                # in place: the one copy below detaches the result from the file (exif_transpose's copying
                # form costs a full extra copy, about half a decode for a phone-sized photo)
                ImageOps.exif_transpose(image, in_place=True)
            return to_rgb(image, background)
    except PILLOW_ERRORS as error:
        raise MediaDecodeError(path, _reason(error)) from error


def image_size(path: str) -> tuple[int, int]:
    """The upright (width, height) from the header alone (no pixel is decoded); MediaDecodeError for a missing
    file or one Pillow cannot identify. A file truncated after its header passes here and fails in load_image."""
    path = os.fspath(path)
    check_media_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            # Pillow finds a PNG's EXIF chunk written after the pixels only by decoding them all (ms, not us)
            header_only = image.format == "PNG" and "exif" not in image.info
            rotated = not header_only and _orientation(image) in ROTATED_ORIENTATIONS
            return (height, width) if rotated else (width, height)
    except PILLOW_ERRORS as error:
        raise MediaDecodeError(path, _reason(error)) from error
