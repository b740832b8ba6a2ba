"""Audio encoder: Whisper's encoder (transformers `WhisperModel(...).encoder`, e.g. openai/whisper-large-v3) with its
own `WhisperFeatureExtractor` (log-mel frames, padded or cut to the model's 30 s window). No CLS token: the readouts
are mean and patches (one token per 20 ms frame, 1500 of them: pool them with `model.patch_tokens`)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from transformers import WhisperModel

from epalm.models.encoders.base import ENCODERS
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.transformers_encoder import (AudioFeatureTransform, Tower, HubTowerEncoder,
                                                        check_sample_rate)


@ENCODERS.register("whisper_encoder")
class WhisperEncoder(HubTowerEncoder):
    modality = "audio"
    family = "Whisper encoder"
    readouts = ("mean", "patches")
    processor_kind = "audio"
    # a Whisper folder is the whole model (a folder of the encoder alone would load as a WhisperModel with random
    # weights): read the encoder out of it
    towers = {"whisper": Tower(WhisperModel, "encoder")}

    def __init__(self, model: torch.nn.Module, processor: Any, cfg: EncoderConfig):
        super().__init__(model, processor, cfg)
        check_sample_rate(cfg, processor, self.family)
        config = model.config
        self.hidden_size, self.num_layers = config.d_model, config.encoder_layers
        self.patch_layout = (config.max_source_positions,)  # the conv stem halves the mel frames

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "mean") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        out = self.model(input_features=media, output_hidden_states=True)
        # transformers puts the encoder's final layer_norm into the last hidden state (the others are raw blocks)
        return self.last_block_tokens(out.hidden_states, num_tokens, self.model.layer_norm, readout, 0,
                                      last_is_normed=True)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """Mono waveform at the extractor's rate -> `(mel bins, frames)` log-mel features."""
        return AudioFeatureTransform(self.processor, "input_features")
