"""What the encoders wrapping a transformers tower share (CLIP, SigLIP, DINOv2, Whisper, CLAP, wav2vec2 / HuBERT,
VideoMAE, X-CLIP): loading the tower from a hub id or a folder (its weights with `pretrained: true`, else its
architecture with random weights), its own preprocessing (`AutoImageProcessor` / `AutoFeatureExtractor`, read from
the same place), the cheap checks of a config section, and the preprocessing's fingerprint for the feature cache.

A family says which model types it reads and where the tower sits in each (`Tower`): a full CLIPModel folder and a
CLIPVisionModel folder both give the vision tower; Whisper's encoder is `WhisperModel(...).encoder`. A load that
leaves any tower weight at its random initialisation (transformers only warns) is an error naming the keys."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2
from transformers import AutoConfig, AutoFeatureExtractor, AutoImageProcessor

from epalm.common.errors import ConfigError, DataFormatError, MissingFileError, loading
from epalm.models.encoders.base import require_own_normalization
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.library_encoder import LibraryEncoder
from epalm.models.model_source import check_model_source, looks_local

PROCESSOR_FILE = "preprocessor_config.json"
TRAIN_CROP_SCALE = (0.5, 1.0)  # eP-ALM's random crop, before the library's processor


@dataclass(frozen=True)
class Tower:
    """How a folder of one model type gives the tower: `model_class.from_pretrained(name)` (or the class built
    from its config), then the sub-module at `attribute` (None: the model itself)."""

    model_class: type
    attribute: str | None = None

    def take(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.attribute) if self.attribute else model


class HubTowerEncoder(LibraryEncoder):
    """A frozen transformers tower and its processor. Subclasses set `family` (in messages), `towers` (model type ->
    `Tower`), `processor_kind` ("image" or "audio") and implement `forward`."""

    family: ClassVar[str]
    towers: ClassVar[dict[str, Tower]]
    processor_kind: ClassVar[str] = "image"

    def __init__(self, model: nn.Module, processor: Any, cfg: EncoderConfig):
        super().__init__(model)
        self.name = cfg.name
        self.processor = processor

    # --- loading --------------------------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: EncoderConfig, key: str) -> None:
        """A name to read the tower and its preprocessing from; a local folder must hold both files."""
        if not cfg.name:
            raise ConfigError(f"{key}.name: encoder type '{cls.type_name()}' reads the {cls.family} and its "
                              f"preprocessing from a hub id or folder; give one")
        if cfg.checkpoint:
            raise ConfigError(f"{key}.checkpoint: encoder type '{cls.type_name()}' loads its weights from `name` "
                              "(pretrained: true), not from a checkpoint file")
        check_model_source(f"{key}.name", cfg.name)
        folder = Path(cfg.name).expanduser()
        if looks_local(cfg.name) or folder.is_dir():
            for needed, what in cls.folder_files():
                if not (folder / needed).is_file():
                    raise MissingFileError(f"{key}.name {cfg.name}: no {needed} ({what}); save it into the folder "
                                           f"with the model (`.save_pretrained(folder)`)")

    @classmethod
    def folder_files(cls) -> list[tuple[str, str]]:
        return [("config.json", f"the {cls.family}'s architecture"),
                (PROCESSOR_FILE, f"the {cls.family}'s preprocessing")]

    @classmethod
    def type_name(cls) -> str:
        from epalm.models.encoders.base import ENCODERS

        return next((name for name in ENCODERS.names() if ENCODERS.get(name) is cls), cls.__name__)

    @classmethod
    def load_tower(cls, cfg: EncoderConfig) -> nn.Module:
        """The tower `cfg.name` holds: its weights with `pretrained`, else random ones; `model_kwargs` override
        config fields (float32 weights: `dtype` casts them after)."""
        cls.check_config(cfg, "encoder")
        with loading(cls.family, cfg.name):
            model_type = AutoConfig.from_pretrained(cfg.name).model_type
        tower = cls.towers.get(model_type)
        if tower is None:
            raise ConfigError(f"{cfg.name} holds a '{model_type}' model; encoder type '{cls.type_name()}' reads "
                              f"{', '.join(sorted(cls.towers))}")
        overrides = dict(cfg.model_kwargs)
        with loading(cls.family, cfg.name):
            if not cfg.pretrained:
                config = tower.model_class.config_class.from_pretrained(cfg.name, **overrides)
                return tower.take(tower.model_class(config))
            model, info = tower.model_class.from_pretrained(cfg.name, output_loading_info=True, dtype=torch.float32,
                                                            **overrides)
        prefix = f"{tower.attribute}." if tower.attribute else ""
        missing = sorted(k for k in info["missing_keys"] if k.startswith(prefix))
        if missing:
            raise DataFormatError(f"{cfg.name}: its weights do not fit {tower.model_class.__name__}: {len(missing)} "
                                  f"tower weights missing (they would stay random), e.g. {missing[:4]}")
        return tower.take(model)

    @classmethod
    def load_processor(cls, cfg: EncoderConfig) -> Any:
        auto = AutoImageProcessor if cls.processor_kind == "image" else AutoFeatureExtractor
        with loading(f"{cls.family} preprocessing", cfg.name):
            return auto.from_pretrained(cfg.name)

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> HubTowerEncoder:
        require_own_normalization(cfg, cls.type_name(), f"normalises as its processor says ({PROCESSOR_FILE})")
        return cls(cls.load_tower(cfg).eval(), cls.load_processor(cfg), cfg)

    # --- preprocessing ----------------------------------------------------------------------------------------
    def preprocessing_fingerprint(self) -> dict:
        return {"encoder": self.type_name(), "name": self.name,
                "processor": json.loads(self.processor.to_json_string())}


class ImageProcessorTransform:
    """A PIL image -> the processor's `pixel_values` of it, `(3, H, W)`. Training: a random crop (scale 0.5-1) and a
    horizontal flip of the decoded image first, then the processor. A class, so that loader workers pickle it."""

    def __init__(self, processor: Any, train: bool):
        self.processor, self.train = processor, train

    def __call__(self, image) -> torch.Tensor:
        if self.train:
            width, height = image.size
            image = v2.Compose([v2.RandomResizedCrop((height, width), scale=TRAIN_CROP_SCALE, antialias=True),
                                v2.RandomHorizontalFlip()])(image)
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def image_input_size(processor: Any) -> tuple[int, int]:
    """(height, width) of what the processor makes of an image (probed once, on a blank one)."""
    from PIL import Image

    pixels = processor(images=Image.new("RGB", (97, 61)), return_tensors="pt")["pixel_values"]
    return int(pixels.shape[-2]), int(pixels.shape[-1])


class AudioFeatureTransform:
    """A mono waveform -> the extractor's `key` tensor of it, one item's. `extra`: keyword arguments of the
    extractor's call (padding, truncation); `seeded`: draw its random crops from a fixed seed (test time: the same
    features every time, as the feature cache needs). A class, so that loader workers pickle it."""

    def __init__(self, extractor: Any, key: str, extra: dict | None = None, seeded: bool = False):
        self.extractor, self.key, self.extra, self.seeded = extractor, key, dict(extra or {}), seeded

    def features(self, waveform: np.ndarray) -> dict:
        waveform = np.asarray(waveform, dtype=np.float32)
        call = lambda: self.extractor(waveform, sampling_rate=self.extractor.sampling_rate,  # noqa: E731
                                      return_tensors="pt", **self.extra)
        if not self.seeded:
            return call()
        state = np.random.get_state()
        np.random.seed(0)
        try:
            return call()
        finally:
            np.random.set_state(state)

    def __call__(self, waveform: np.ndarray) -> torch.Tensor:
        return self.features(waveform)[self.key][0]


def check_sample_rate(cfg: EncoderConfig, extractor: Any, family: str) -> None:
    """The modality decodes audio at `sample_rate`; the extractor was made for its own rate."""
    if cfg.sample_rate != extractor.sampling_rate:
        raise ConfigError(f"encoder sample_rate {cfg.sample_rate} but the {family}'s feature extractor reads "
                          f"{extractor.sampling_rate} Hz audio: set sample_rate: {extractor.sampling_rate}")


class ImageTowerEncoder(HubTowerEncoder):
    """An image tower returning `hidden_states` (embeddings, then each block): CLIP, SigLIP, DINOv2. Subclasses set
    `final_norm` (the attribute of the norm after the last block) and `prefix_tokens(config)` (CLS, registers)."""

    final_norm: ClassVar[str]

    def __init__(self, model: nn.Module, processor: Any, cfg: EncoderConfig):
        super().__init__(model, processor, cfg)
        config = model.config
        self.hidden_size, self.num_layers = config.hidden_size, config.num_hidden_layers
        self.num_prefix = self.prefix_tokens(config)
        height, width = image_input_size(processor)
        self.patch_layout = (height // config.patch_size, width // config.patch_size)

    @classmethod
    def prefix_tokens(cls, config) -> int:
        return 1

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        out = self.model(pixel_values=media, output_hidden_states=True)
        norm = getattr(self.model, self.final_norm)
        return self.last_block_tokens(out.hidden_states, num_tokens, norm, readout, self.num_prefix)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """PIL image -> the processor's `(3, H, W)` (training: a random crop and flip before it)."""
        return ImageProcessorTransform(self.processor, train)
