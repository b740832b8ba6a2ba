"""Audio encoder: transformers' Audio Spectrogram Transformer, read out as its last K CLS tokens."""
from __future__ import annotations

import json
from typing import Any, Callable

import torch
from transformers import ASTConfig, ASTModel
from transformers.utils import cached_file

from dataset.media.audio import AUDIOSET_MEAN, AUDIOSET_STD, FbankFeatures
from models.encoders.base import ENCODERS, PerceptionEncoder
from models.encoders.config import EncoderConfig
from models.encoders.original_checkpoints import load_original_ast


class ASTEncoder(PerceptionEncoder):
    modality = "audio"

    def __init__(self, model: ASTModel, cfg: EncoderConfig, mean: float, std: float):
        super().__init__()
        self.model = model
        self.name = cfg.name or str(cfg.checkpoint or "random-init")
        self.hidden_size = model.config.hidden_size
        self.num_layers = model.config.num_hidden_layers
        self.sample_rate = cfg.sample_rate
        self.audio_frames = model.config.max_length
        self.mel_bins = model.config.num_mel_bins
        self.mean, self.std = mean, std

    def forward(self, media: torch.Tensor, num_tokens: int) -> torch.Tensor:
        if not 1 <= num_tokens <= self.num_layers:
            raise ValueError(f"num_tokens (injected_hidden_states) must be in 1..{self.num_layers}, got {num_tokens}")
        if media.ndim != 3 or media.shape[1:] != (self.audio_frames, self.mel_bins):
            raise ValueError(f"expected fbank (B, {self.audio_frames}, {self.mel_bins}), got {tuple(media.shape)}")
        out = self.model(input_values=media, output_hidden_states=True)
        # hidden_states[0] is the embedding output, hidden_states[i] the output of block i-1 (before the final norm);
        # position 0 is the CLS token, position 1 the distillation token
        hidden_states = out.hidden_states
        if len(hidden_states) != self.num_layers + 1:
            raise RuntimeError(f"ASTModel returned {len(hidden_states)} hidden states, expected {self.num_layers + 1}")
        cls_tokens = torch.stack([h[:, 0] for h in hidden_states[-num_tokens:]], dim=1)
        return self.model.layernorm(cls_tokens)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """Mono waveform at `sample_rate` (from `dataset.media.audio.load_audio`) -> `(frames, mel)` fbank."""
        return FbankFeatures(
            sample_rate=self.sample_rate,
            mel_bins=self.mel_bins,
            target_frames=self.audio_frames,
            mean=self.mean,
            std=self.std,
            train=train,
        )

    def preprocessing_fingerprint(self) -> dict:
        return {"encoder": "ast", "name": self.name, **self.preprocessing(train=False).fingerprint()}

    def train(self, mode: bool = True) -> ASTEncoder:
        super().train(mode)
        self.model.eval()  # frozen: dropout stays off while the bridge trains
        return self


def _folder_fbank_stats(name: str) -> tuple[float, float] | None:
    """The fbank mean/std of a transformers folder's or hub repo's feature extractor, when it has one."""
    try:
        path = cached_file(name, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None
    if path is None:
        return None
    with open(path) as handle:
        values = json.load(handle)
    if "mean" not in values or "std" not in values:
        return None
    return float(values["mean"]), float(values["std"])


@ENCODERS.register("ast")
def build_ast(cfg: EncoderConfig) -> ASTEncoder:
    if cfg.normalization != "encoder":
        raise ValueError("encoder type 'ast' has one normalisation (AudioSet fbank statistics): use normalization: encoder")
    for key in ("max_length", "num_mel_bins"):
        if key in cfg.model_kwargs:
            raise ValueError(f"set the fbank size with the encoder's audio_frames / mel_bins, not model_kwargs.{key}")
    overrides = {"max_length": cfg.audio_frames, "num_mel_bins": cfg.mel_bins, **cfg.model_kwargs}
    if cfg.checkpoint:
        model, _ = load_original_ast(cfg.checkpoint, overrides)
    elif cfg.pretrained:
        if not cfg.name:
            raise ValueError("encoder type 'ast' with pretrained: true needs `name` (hub id or folder)")
        model = ASTModel.from_pretrained(cfg.name, **overrides)
    else:
        config = ASTConfig.from_pretrained(cfg.name, **overrides) if cfg.name else ASTConfig(**overrides)
        model = ASTModel(config)

    stats = _folder_fbank_stats(cfg.name) if cfg.name and not cfg.checkpoint else None
    mean, std = stats or (AUDIOSET_MEAN, AUDIOSET_STD)
    return ASTEncoder(model.eval(), cfg, mean, std)
