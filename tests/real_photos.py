"""Real photographs in the file kinds a newcomer brings, built from the pictures that ship inside scikit-image's
wheel (skimage/data: astronaut, coffee, chelsea, rocket, camera, moon; no download, no pooch).

    photos = build_photo_set(folder, max_side=96)      # {name: Photo}
    photos["moon16"].path, photos["moon16"].expected   # the RGB a correct decoder returns (uint8 HxWx3)

Each Photo carries the upright RGB a correct decoder must return (transparency over white) and the mean
absolute error a lossy codec allows; broken files carry `expected=None`. Deterministic (a fixed seed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112


@dataclass
class Photo:
    path: Path
    kind: str  # as the table names it
    expected: np.ndarray | None  # upright RGB over a white background; None for a broken file
    tolerance: float = 0.0  # allowed mean |decoded - expected| (JPEG)


def bundled(name: str) -> Path:
    """A photograph shipped in scikit-image's wheel (a clear error if the test extra is not installed)."""
    try:
        import skimage.data
    except ModuleNotFoundError as error:  # pragma: no cover - the test extra installs it
        raise ModuleNotFoundError("the real-photograph tests need scikit-image: pip install -e '.[test]'") from error
    path = Path(os.path.dirname(skimage.data.__file__)) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in this scikit-image wheel")
    return path


def _photo(name: str, mode: str, max_side: int | None) -> np.ndarray:
    with Image.open(bundled(name)) as image:
        image = image.convert(mode)
        if max_side and max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return np.asarray(image).copy()


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)


def build_photo_set(folder: Path, max_side: int | None = None, broken: bool = True) -> dict[str, Photo]:
    """Write the photographs into `folder`; max_side shrinks the sources first (small and fast for training tests)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photos: dict[str, Photo] = {}

    def add(name: str, file: str, kind: str, expected, tolerance: float = 0.0) -> Path:
        photos[name] = Photo(folder / file, kind, expected, tolerance)
        return folder / file

    astronaut, coffee = _photo("astronaut.png", "RGB", max_side), _photo("coffee.png", "RGB", max_side)
    chelsea, rocket = _photo("chelsea.png", "RGB", max_side), _photo("rocket.jpg", "RGB", max_side)
    camera, moon = _photo("camera.png", "L", max_side), _photo("moon.png", "L", max_side)

    Image.fromarray(rocket).save(add("rgb_jpeg", "rocket.jpg", "RGB JPEG", rocket, 4.0), quality=92)
    Image.fromarray(camera).save(add("gray_jpeg", "camera.jpg", "grayscale JPEG", _gray3(camera), 4.0), quality=92)
    Image.fromarray(coffee).convert("CMYK").save(add("cmyk_jpeg", "coffee_cmyk.jpg", "CMYK JPEG", coffee, 4.0),
                                                 quality=95)
    # RGBA: a fully transparent box (black stored under it, as editors leave it) and a half-transparent band
    height, width = astronaut.shape[:2]
    alpha = np.full((height, width), 255, np.uint8)
    alpha[height // 4 : height // 2, width // 4 : width // 2] = 0
    alpha[-max(2, height // 8) :, :] = 128
    stored = astronaut.copy()
    stored[alpha == 0] = 0
    Image.fromarray(np.dstack([stored, alpha]), "RGBA").save(
        add("rgba_png", "astronaut_rgba.png", "RGBA PNG", over_white(stored, alpha)))
    palette = Image.fromarray(chelsea).quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(add("palette_png", "chelsea_palette.png", "palette PNG", np.asarray(palette.convert("RGB")).copy()))
    bilevel = Image.fromarray(camera).convert("1")
    bilevel.save(add("bilevel_png", "camera_1bit.png", "1-bit PNG",
                     _gray3(np.where(np.asarray(bilevel), 255, 0).astype(np.uint8))))
    moon_alpha = np.full(moon.shape, 255, np.uint8)
    moon_alpha[: moon.shape[0] // 3, : moon.shape[1] // 3] = 0
    Image.fromarray(np.dstack([moon, moon_alpha]), "LA").save(
        add("la_png", "moon_la.png", "gray + alpha (LA) PNG", over_white(_gray3(moon), moon_alpha)))
    # 16-bit: the 8-bit moon in the high byte, a seeded low byte; round(v * 255 / 65535) is the 8-bit moon exactly
    moon16 = np.clip(moon.astype(np.int64) * 257 + rng.integers(-128, 129, moon.shape), 0, 65535).astype(np.uint16)
    Image.fromarray(moon16).save(add("moon16", "moon16.png", "16-bit PNG", _gray3(moon)))
    Image.fromarray(moon).save(add("moon8", "moon.png", "8-bit gray PNG", _gray3(moon)))
    tiny = np.asarray(Image.fromarray(chelsea).resize((16, 16), Image.Resampling.LANCZOS)).copy()
    Image.fromarray(tiny).save(add("tiny", "chelsea_16x16.png", "16x16 image", tiny))
    with Image.open(bundled("rocket.jpg")) as image:
        wide = image.convert("RGB").resize((2000, round(2000 * image.height / image.width)), Image.Resampling.LANCZOS)
    strip = np.asarray(wide.crop((0, wide.height // 2, 2000, wide.height // 2 + 50))).copy()
    Image.fromarray(strip).save(add("strip", "rocket_2000x50.jpg", "2000x50 image", strip, 4.0), quality=92)
    # A phone photo stored sideways: orientation 6 = "rotate 90 degrees clockwise to display"; Pillow's
    # exif_transpose applies ROTATE_270 for it, so the file stores the upright picture rotated by 90.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(coffee).transpose(Image.Transpose.ROTATE_90).save(
        add("exif6", "coffee_phone.jpg", "EXIF-rotated JPEG", coffee, 4.0), quality=95, exif=exif)
    if broken:
        whole = photos["rgb_jpeg"].path.read_bytes()
        add("truncated", "truncated.jpg", "JPEG cut at 60 %", None).write_bytes(whole[: len(whole) * 6 // 10])
        add("empty", "empty.jpg", "empty file", None).write_bytes(b"")
        add("text", "notes.jpg", "text file named .jpg", None).write_text("not a picture\n")
    return photos
