"""Audio encoder: CLAP's audio tower (transformers `ClapAudioModelWithProjection(...).audio_model`, HTS-AT: a Swin
transformer over the log-mel spectrogram; e.g. laion/clap-htsat-fused) with its own `ClapFeatureExtractor`.

No CLS token: the readouts are mean (per stage; the last stage's through the final norm equals CLAP's pooled output)
and patches (the tokens of stage -K, (frequency, time) grid). K counts Swin stages, not blocks; a stage narrower than
the last is zero-padded to its width (read without the final norm, which has the last stage's width). A fused model
(`enable_fusion`) reads 4-channel features and, per item, whether the clip was longer than the window: that flag rides
as one extra row of the item's tensor. Random crops of long clips come from a fixed seed at test time."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from transformers import ClapAudioModelWithProjection

from epalm.models.encoders.base import ENCODERS
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.library_encoder import pad_width
from epalm.models.encoders.transformers_encoder import (AudioFeatureTransform, Tower, HubTowerEncoder,
                                                        check_sample_rate)


@ENCODERS.register("clap_audio")
class ClapAudioEncoder(HubTowerEncoder):
    modality = "audio"
    family = "CLAP audio tower"
    readouts = ("mean", "patches")
    processor_kind = "audio"
    # ClapAudioModel.from_pretrained reads neither a full ClapModel folder nor its own tower's saved keys; the
    # WithProjection class reads both: its `audio_model` is the tower
    towers = {"clap": Tower(ClapAudioModelWithProjection, "audio_model"),
              "clap_audio_model": Tower(ClapAudioModelWithProjection, "audio_model")}

    def __init__(self, model: torch.nn.Module, processor: Any, cfg: EncoderConfig):
        super().__init__(model, processor, cfg)
        check_sample_rate(cfg, processor, self.family)
        encoder = model.audio_encoder
        self.fused = bool(model.config.enable_fusion)
        self.hidden_size, self.num_layers = encoder.num_features, len(encoder.layers)
        # the token grid after stage i (its patch merging included), the embeddings' first
        self.grids = [tuple(encoder.input_resolutions[min(i, self.num_layers - 1)]) for i in range(self.num_layers)]
        self.grids.append(self.grids[-1])

    def patch_grid(self, num_tokens: int) -> tuple[int, ...]:
        return self.grids[-num_tokens]

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "mean") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        inputs = {"input_features": media}
        if self.fused:  # the last row holds `is_longer` (see `preprocessing`)
            inputs = {"input_features": media[:, :, :-1], "is_longer": media[:, 0, -1, :1] > 0.5}
        out = self.model(**inputs, output_hidden_states=True)
        stages = [h.flatten(2).transpose(1, 2) for h in out.hidden_states[-num_tokens:]]  # (B, H*W, C) each
        if readout == "patches":
            return pad_width(stages[0], self.hidden_size)
        if readout != "mean":
            raise ValueError(f"readout must be one of {self.readouts}, got {readout!r}")
        norm = self.model.audio_encoder.norm
        return torch.stack([pad_width((norm(h) if h.shape[-1] == self.hidden_size else h).mean(1), self.hidden_size)
                            for h in stages], dim=1)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """Mono waveform at the extractor's rate -> `(channels, frames, mel)` (one more frame row when fused)."""
        return ClapFeatures(self.processor, self.fused, seeded=not train)


class ClapFeatures(AudioFeatureTransform):
    def __init__(self, extractor: Any, fused: bool, seeded: bool):
        super().__init__(extractor, "input_features", seeded=seeded)
        self.fused = fused

    def __call__(self, waveform: np.ndarray) -> torch.Tensor:
        features = self.features(waveform)
        mel = features["input_features"][0]  # (channels, frames, mel)
        if not self.fused:
            return mel
        longer = torch.full_like(mel[:, :1], float(bool(features["is_longer"].reshape(-1)[0])))
        return torch.cat([mel, longer], dim=1)
