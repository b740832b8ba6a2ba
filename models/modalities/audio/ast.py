"""Audio encoder: transformers' Audio Spectrogram Transformer, read out as its last K CLS tokens."""
from __future__ import annotations

from typing import Any, Callable

import torch
from transformers import ASTConfig, ASTModel

from epalm.common.errors import ConfigError, loading
from epalm.models.encoders.base import ENCODERS, READOUTS, require_own_normalization
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.library_encoder import LibraryEncoder, read_preprocessor_config
from epalm.models.modalities.audio.ast_original import load_original_ast
from epalm.models.modalities.audio.modality import AUDIOSET_MEAN, AUDIOSET_STD, FbankFeatures


@ENCODERS.register("ast")
class ASTEncoder(LibraryEncoder):
    modality = "audio"
    readouts = READOUTS

    def __init__(self, model: ASTModel, cfg: EncoderConfig, mean: float, std: float):
        super().__init__(model)
        self.name = cfg.name or str(cfg.checkpoint or "random-init")
        self.hidden_size = model.config.hidden_size
        self.num_layers = model.config.num_hidden_layers
        self.sample_rate = cfg.sample_rate
        self.audio_frames = model.config.max_length
        self.mel_bins = model.config.num_mel_bins
        self.mean, self.std = mean, std
        config = model.config  # the patch grid: frequency rows x time columns, as AST's embeddings flatten it
        self.patch_layout = ((config.num_mel_bins - config.patch_size) // config.frequency_stride + 1,
                             (config.max_length - config.patch_size) // config.time_stride + 1)

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        if media.ndim != 3 or media.shape[1:] != (self.audio_frames, self.mel_bins):
            raise ValueError(f"expected fbank (B, {self.audio_frames}, {self.mel_bins}), got {tuple(media.shape)}")
        out = self.model(input_values=media, output_hidden_states=True)
        # position 0 is the CLS token, position 1 the distillation token, then the patches
        return self.last_block_tokens(out.hidden_states, num_tokens, self.model.layernorm, readout, 2)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """Mono waveform at `sample_rate` (from `epalm.models.modalities.audio.decode.load_audio`) -> `(frames, mel)` fbank."""
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

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> ASTEncoder:
        require_own_normalization(cfg, "ast", "has one normalisation (AudioSet fbank statistics)")
        for key in ("max_length", "num_mel_bins"):
            if key in cfg.model_kwargs:
                raise ConfigError(f"set the fbank size with the encoder's audio_frames / mel_bins, not model_kwargs.{key}")
        overrides = {"max_length": cfg.audio_frames, "num_mel_bins": cfg.mel_bins, **cfg.model_kwargs}
        if cfg.checkpoint:
            model, _ = load_original_ast(cfg.checkpoint, overrides)
        elif cfg.pretrained:
            if not cfg.name:
                raise ConfigError("encoder type 'ast' with pretrained: true needs `name` (hub id or folder)")
            with loading("AST", cfg.name):
                model = ASTModel.from_pretrained(cfg.name, **overrides)
        else:
            with loading("AST config", cfg.name):
                config = ASTConfig.from_pretrained(cfg.name, **overrides) if cfg.name else ASTConfig(**overrides)
            model = ASTModel(config)

        folder = read_preprocessor_config(cfg.name) if cfg.name and not cfg.checkpoint else {}
        mean, std = float(folder.get("mean", AUDIOSET_MEAN)), float(folder.get("std", AUDIOSET_STD))
        return ASTEncoder(model.eval(), cfg, mean, std)

