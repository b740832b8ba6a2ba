"""Finding the media file an annotation entry names, whatever extension the user's files have.

The reference formats name images without saying their extension (a VQA `img_id`), or with the one COCO uses
(`.jpg`); a user's own data set holds PNGs, `.JPG`s, `.jpeg`s. A reader lists the paths an entry may stand for
(its candidates, the format's own rule first); `MediaLookup.find` returns

1. the first candidate that is a file under the media root;
2. otherwise a file with the same folder and name and any extension (`beach01` or `beach01.jpg` -> `beach01.png`,
   `IMG_7.jpg` -> `IMG_7.JPG`), from an index of the media folder built once, on the first miss (the first in
   sorted order when several differ only by extension);
3. otherwise the first candidate: the file is reported missing, with the reader's rule (`TaskSplit.media_rule`)
   saying what was looked for, when the split's media are checked (training/data.py, check_data).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def without_suffix(relative: str) -> str:
    """`a/b.jpg` -> `a/b`; a name whose suffix is not a media extension keeps it (`img.2019` is a name)."""
    path = PurePosixPath(relative)
    return str(path.with_suffix("")) if path.suffix.lower() in IMAGE_SUFFIXES else str(path)


class MediaLookup:
    """`find(candidates)`: the relative path under `media_root` of the file an entry names (see the module doc)."""

    def __init__(self, media_root: Path):
        self.media_root = Path(media_root)
        self._found: dict[str, bool] = {}
        self._by_stem: dict[str, list[str]] | None = None

    def _exists(self, relative: str) -> bool:
        if relative not in self._found:
            self._found[relative] = (self.media_root / relative).is_file()
        return self._found[relative]

    def _index(self) -> dict[str, list[str]]:
        if self._by_stem is None:
            self._by_stem = {}
            for folder, _, files in os.walk(self.media_root):
                base = PurePosixPath(Path(folder).relative_to(self.media_root).as_posix())
                for name in sorted(files):
                    relative = str(base / name) if str(base) != "." else name
                    self._by_stem.setdefault(without_suffix(relative), []).append(relative)
        return self._by_stem

    def find(self, candidates: list[str]) -> str:
        for candidate in candidates:
            if self._exists(candidate):
                return candidate
        index = self._index()
        for candidate in candidates:
            same_name = index.get(without_suffix(candidate))
            if same_name:
                return same_name[0]
        return candidates[0]
