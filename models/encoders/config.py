"""What to build as the frozen perception encoder, and how to feed it."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from epalm.common.errors import ConfigError, did_you_mean

NORMALIZATIONS = ("encoder", "clip")
ENCODER_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class EncoderConfig:
    """One perception encoder.

    type: registry name of the encoder class (models/modalities/<modality>/: "timm_vit", "timesformer", "ast",
        "sensor_transformer", or a plugin's); it must read the modality the section is listed under.
    name: a timm model name (tags allowed, e.g. "vit_base_patch16_224.augreg_in21k_ft_in1k"), or for
        TimeSformer / AST a transformers hub id or local folder ("" = architecture from `model_kwargs` alone).
    checkpoint: a local weight file: a timm checkpoint, or the ORIGINAL TimeSformer `.pyth` / AST `.pth`.
    pretrained: load weights through the library's normal mechanism (timm pretrained tags, transformers
        `from_pretrained`). With neither `checkpoint` nor `pretrained` the weights are random (tests, demos).
    model_kwargs: architecture overrides passed to `timm.create_model` or as transformers config fields.
    normalization: "encoder" = the encoder's own pixel mean/std (timm `pretrained_cfg`, the folder's
        preprocessor config, TimeSformer's 0.45/0.225); "clip" = the eP-ALM reference's CLIP mean/std.
        Audio has a single normalisation (AudioSet fbank statistics), so AST accepts only "encoder".
    num_frames: frames per video clip (TimeSformer).
    audio_frames, sample_rate, mel_bins: fbank length in 10 ms frames, waveform rate, mel bins (AST).
    dtype: "auto", "float32", "float16" or "bfloat16": the dtype the frozen weights are held in (media are
        cast to it). "auto": the mixed-precision dtype (as the LM), float32 when its LayerNorms train.
    """

    type: str = "timm_vit"
    name: str = ""
    checkpoint: str | None = None
    pretrained: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    normalization: str = "encoder"
    num_frames: int = 8
    audio_frames: int = 1024
    sample_rate: int = 16000
    mel_bins: int = 128
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"encoder normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
                              f"{did_you_mean(self.normalization, NORMALIZATIONS)}")
        if self.checkpoint and self.pretrained:
            raise ConfigError(
                "encoder: set either `checkpoint` (a local weight file) or `pretrained: true` "
                "(the library's own weights), not both"
            )
        for key in ("num_frames", "audio_frames", "sample_rate", "mel_bins"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"encoder {key} must be a positive integer, got {value!r}")
        if self.dtype not in ENCODER_DTYPES:
            raise ConfigError(f"encoder dtype must be one of {sorted(ENCODER_DTYPES)}, got {self.dtype!r}"
                              f"{did_you_mean(self.dtype, ENCODER_DTYPES)}")
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError(f"encoder model_kwargs must be a mapping, got {type(self.model_kwargs).__name__}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderConfig:
        """Build from a parsed config section; an unknown key is an error, never silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown encoder config key(s) {unknown}{did_you_mean(unknown[0], known)}; "
                              f"known: {sorted(known)}")
        return cls(**values)
