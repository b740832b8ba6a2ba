"""Frozen-encoder feature cache: the encoder's features of each media item (the K vectors of readout cls or mean, the
N patch tokens of readout patches), computed once, stored on disk.

The encoder is frozen, so with the deterministic test-time preprocessing its output for a file never
changes. A cache folder is keyed by everything that could change it (`encoder_identity`, shared by the runs and the
few-shot study): the encoder's type, name, weights file (path, size, mtime), architecture overrides, the dtype its
weights are held in, K, the readout (and its pooled patch count) and the preprocessing fingerprint. Inside, each
media item is keyed by its relative path, size and mtime, so an edited file is encoded again. Training and evaluation
then read `(K, d_enc)` (or `(N, d_enc)`) tensors instead of decoding and encoding media.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from epalm.common.atomic_io import atomic_path, write_text_atomic
from epalm.common.errors import MediaDecodeError
from epalm.models.encoders.config import EncoderConfig

INDEX_FILE = "index.json"
TENSORS_FILE = "features.safetensors"


def cache_key(encoder_identity: dict[str, Any], fingerprint: dict[str, Any], num_tokens: int) -> str:
    blob = json.dumps({"encoder": encoder_identity, "preprocessing": fingerprint, "K": num_tokens}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def encoder_identity(enc: EncoderConfig, readout: str, patch_tokens: int | None = None) -> dict[str, Any]:
    """What in an encoder section (and the model's readout) changes its features: the first part of a cache key."""
    return {
        "type": enc.type, "name": enc.name, "pretrained": enc.pretrained, "model_kwargs": enc.model_kwargs,
        "checkpoint": str(Path(enc.checkpoint).resolve()) if enc.checkpoint else None,
        "checkpoint_stamp": file_stamp(Path(enc.checkpoint)) if enc.checkpoint else None,
        "num_frames": enc.num_frames, "audio_frames": enc.audio_frames, "sample_rate": enc.sample_rate,
        "dtype": enc.dtype, "readout": readout,
        # a key only where it changes the features: the caches of runs before it stay valid
        **({"patch_tokens": patch_tokens} if readout == "patches" else {}),
    }


def file_stamp(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}:{int(stat.st_mtime_ns)}"


class FeatureCache:
    """`cache[media]` -> `(K, d_enc)` (or `(N, d_enc)`) float32 tensor, or MediaDecodeError for an item that failed
    to decode."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.entries: dict[str, dict[str, Any]] = {}  # media -> {"stamp", "row"} or {"stamp", "error"}
        self.tensor: torch.Tensor | None = None
        if (folder / INDEX_FILE).is_file():
            self.entries = json.loads((folder / INDEX_FILE).read_text())
            if (folder / TENSORS_FILE).is_file():
                self.tensor = load_file(str(folder / TENSORS_FILE))["features"]

    def missing(self, media: list[str], media_root: Path) -> list[str]:
        """Items with no entry, or whose file changed since it was encoded."""
        return [m for m in media if self.entries.get(m, {}).get("stamp") != file_stamp(media_root / m)]

    def add(self, computed: dict[str, torch.Tensor], errors: dict[str, str], media_root: Path) -> None:
        """Merge new rows and failures, then rewrite both files (temporary name, then rename)."""
        entries: dict[str, dict[str, Any]] = {}
        stacked: list[torch.Tensor] = []
        for media, entry in self.entries.items():
            if media in computed or media in errors:
                continue
            if "row" in entry:
                entries[media] = {"stamp": entry["stamp"], "row": len(stacked)}
                stacked.append(self.tensor[entry["row"]])
            else:
                entries[media] = entry
        for media, features in computed.items():
            entries[media] = {"stamp": file_stamp(media_root / media), "row": len(stacked)}
            stacked.append(features)
        for media, reason in errors.items():
            entries[media] = {"stamp": file_stamp(media_root / media), "error": reason}
        self.folder.mkdir(parents=True, exist_ok=True)
        tensor = torch.stack(stacked).contiguous() if stacked else torch.zeros(0)
        with atomic_path(self.folder / TENSORS_FILE) as tmp:
            save_file({"features": tensor}, str(tmp))
        write_text_atomic(self.folder / INDEX_FILE, json.dumps(entries))
        self.entries, self.tensor = entries, tensor

    def __getitem__(self, media: str) -> torch.Tensor:
        entry = self.entries.get(media)
        if entry is None:
            raise KeyError(f"{media}: not in the feature cache {self.folder}")
        if "error" in entry:
            raise MediaDecodeError(media, entry["error"])
        return self.tensor[entry["row"]]


@torch.no_grad()
def encode_items(
    media: list[str],
    media_root: Path,
    load: Callable[[str], torch.Tensor],
    encode: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    show_progress: bool = True,
    desc: str = "encoding media for the feature cache",
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Decode + preprocess each item with `load(path)`, encode in batches; failures are collected."""
    computed: dict[str, torch.Tensor] = {}
    errors: dict[str, str] = {}
    pending: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        if pending:
            out = encode(torch.stack([tensor for _, tensor in pending])).float().cpu()
            for (name, _), row in zip(pending, out):
                computed[name] = row.clone()
            pending.clear()

    for name in tqdm(media, desc=desc, disable=not show_progress):
        try:
            pending.append((name, load(str(media_root / name))))
        except MediaDecodeError as error:
            errors[name] = error.reason
        if len(pending) >= batch_size:
            flush()
    flush()
    return computed, errors
