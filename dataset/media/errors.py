"""Errors raised by media decoders; the dataset reports them once, skips the item and counts it."""
from __future__ import annotations


class MediaDecodeError(Exception):
    """A media file is missing, unreadable or corrupt."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
