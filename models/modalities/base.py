"""The one interface every modality plugin implements, and the registry plugins are found in by name."""
from __future__ import annotations

import html
import importlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from epalm.common.errors import ConfigError, MediaDecodeError
from epalm.common.registry import Registry

if TYPE_CHECKING:  # the encoders import the plugins' transforms: no import cycle at run time
    from epalm.models.encoders.base import PerceptionEncoder
    from epalm.models.encoders.config import EncoderConfig


FILE_NOT_FOUND = "file not found"  # the reason check_media_file gives a missing file


def check_media_file(path: str) -> None:
    """MediaDecodeError when the file is missing or empty."""
    if not os.path.isfile(path):
        raise MediaDecodeError(path, FILE_NOT_FOUND)
    if os.path.getsize(path) == 0:
        raise MediaDecodeError(path, "empty file")


class Modality(ABC):
    """One kind of media. A plugin subclasses this in its own module and registers it:

        @register_modality
        class DepthModality(Modality):
            name, placeholder, data_key = "depth", "<depth>", "depths"
            def decode(self, path, train, rng, encoder_cfg): ...

    name: the registry name; encoders declare the modality they read with the same name.
    placeholder: the text token that stands for one instance in a chat message ("<image>").
    data_key: the chat-schema row key listing the instances' files ("images").
    How many LM positions an instance takes is the connector's: one slot for eP-ALM layer injection,
    `connector_options.tokens` for the input-prefix connector (docs/modalities.md).
    """

    name: str = ""
    placeholder: str = ""
    data_key: str = ""

    @abstractmethod
    def decode(self, path: str, train: bool, rng: np.random.Generator | None, encoder_cfg: EncoderConfig) -> Any:
        """The decoded item (a PIL image, frames, a waveform ...); raises epalm.common.errors.MediaDecodeError
        for a missing or broken file, which the data pipeline reports and skips."""

    def transform(self, encoder: PerceptionEncoder, train: bool) -> Callable[[Any], torch.Tensor]:
        """Decoded item -> the encoder's input tensor (default: what the encoder asks for)."""
        return encoder.preprocessing(train)

    def fingerprint(self, encoder: PerceptionEncoder, encoder_cfg: EncoderConfig) -> dict:
        """Everything that changes what test-time preprocessing produces (part of the feature-cache key)."""
        return {"modality": self.name, **encoder.preprocessing_fingerprint()}

    def preprocessor(self, encoder: PerceptionEncoder, encoder_cfg: EncoderConfig, train: bool) -> Preprocessor:
        return Preprocessor(self, encoder_cfg, self.transform(encoder, train), train)

    def probe(self, path: str) -> tuple[int, int] | None:
        """A cheap look at a file before training (the data checks of every split): MediaDecodeError when it is
        missing or plainly unreadable; its upright (width, height) when the modality has one (None otherwise).
        Default: the file exists and is not empty; decoding errors show when `decode` reads it."""
        check_media_file(path)
        return None

    def preview_html(self, path: str, page_dir: Path) -> str:
        """How the predictions page shows an instance (default: a link to the file)."""
        return f'<a href="{html.escape(os.path.relpath(path, page_dir))}">{html.escape(Path(path).name)}</a>'


class Preprocessor:
    """`preprocessor(path, rng)` -> the encoder's input: decode, then transform. A class, not a closure, so
    that data-loader workers can pickle it."""

    def __init__(self, modality: Modality, encoder_cfg: EncoderConfig, transform: Callable[[Any], torch.Tensor],
                 train: bool):
        self.modality, self.encoder_cfg, self.transform, self.train = modality, encoder_cfg, transform, train

    def decode(self, path: str, rng: np.random.Generator | None) -> Any:
        return self.modality.decode(path, self.train, rng, self.encoder_cfg)

    def __call__(self, path: str, rng: np.random.Generator | None = None) -> torch.Tensor:
        return self.transform(self.decode(path, rng))


MODALITIES: Registry[Modality] = Registry("modality", discover=("epalm.models.modalities",))
_PLACEHOLDERS: dict[str, str] = {}
_instances: dict[str, Modality] = {}


def register_modality(cls: type[Modality]) -> type[Modality]:
    """Class decorator: check the plugin's declarations and register it under `cls.name`."""
    for attribute in ("name", "placeholder", "data_key"):
        if not getattr(cls, attribute):
            raise TypeError(f"modality plugin {cls.__name__} must set `{attribute}`")
    if cls.placeholder in _PLACEHOLDERS:
        raise TypeError(f"modality '{cls.name}': placeholder {cls.placeholder} is already "
                        f"modality '{_PLACEHOLDERS[cls.placeholder]}''s")
    _PLACEHOLDERS[cls.placeholder] = cls.name
    MODALITIES.register(cls.name)(cls)
    return cls


def load_plugins(modules: list[str]) -> None:
    """Import plugin modules by name (`package.module`); each registers what it defines."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            raise ConfigError(f"plugins: cannot import '{name}' ({error})") from None


def get_modality(name: str) -> Modality:
    if name not in _instances:
        _instances[name] = MODALITIES.build(name)
    return _instances[name]


def modality_names() -> list[str]:
    return MODALITIES.names()


def placeholders() -> dict[str, str]:
    """placeholder -> modality name, of every registered modality."""
    MODALITIES.names()  # discovers the built-in plugins
    return dict(_PLACEHOLDERS)
