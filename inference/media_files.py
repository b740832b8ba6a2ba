"""Which modality a file is, from its name: for the files of a folder (`predict --input DIR`) and uploads (`serve`).

The image, video and audio modalities are recognised by extension; a plugin modality's files (or any file read
as another modality) are named with `--modality` (predict) or the modality picker (serve).
"""
from __future__ import annotations

from pathlib import Path

EXTENSIONS = {
    "image": (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    "video": (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"),
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"),
}


def guess_modality(path: str | Path, modalities: list[str]) -> str | None:
    """The modality among `modalities` whose extensions `path` has; None when none has them."""
    suffix = Path(path).suffix.lower()
    return next((name for name in modalities if suffix in EXTENSIONS.get(name, ())), None)


def media_files(folder: Path, modalities: list[str], forced: str | None) -> list[tuple[str, Path]]:
    """(modality, file) of every file under `folder`, sorted by path: `forced`'s for all of them, else those whose
    extension names one of `modalities`."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        modality = forced or guess_modality(path, modalities)
        if modality is not None:
            found.append((modality, path))
    return found
