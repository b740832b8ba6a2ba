"""Audio encoder: wav2vec 2.0 and HuBERT (transformers `Wav2Vec2Model` / `HubertModel`, e.g. facebook/wav2vec2-base-960h,
facebook/hubert-large-ls960-ft) with their own `Wav2Vec2FeatureExtractor` (the normalised waveform).

A clip is `audio_frames` x 10 ms of waveform (the encoder section's key, 1024 = 10.24 s), zero-padded or cut; the
padding mask rides as the item's second row and is given to the model where its extractor says so (large, "stable
layer norm" models; base models read zero padding unmasked, as their cards say). No CLS token: the readouts are mean
(over the frames of the clip, padding left out) and patches (one token per 20 ms frame, padding included). The final
norm is `encoder.layer_norm` after the blocks for stable-layer-norm models, none for base ones (theirs comes first)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from transformers import HubertModel, Wav2Vec2Model

from epalm.models.encoders.base import ENCODERS
from epalm.models.encoders.config import EncoderConfig
from epalm.models.encoders.transformers_encoder import (AudioFeatureTransform, Tower, HubTowerEncoder,
                                                        check_sample_rate)


@ENCODERS.register("wav2vec2")
class Wav2Vec2Encoder(HubTowerEncoder):
    modality = "audio"
    family = "wav2vec 2.0 / HuBERT model"
    readouts = ("mean", "patches")
    processor_kind = "audio"
    towers = {"wav2vec2": Tower(Wav2Vec2Model), "hubert": Tower(HubertModel)}

    def __init__(self, model: torch.nn.Module, processor: Any, cfg: EncoderConfig):
        super().__init__(model, processor, cfg)
        check_sample_rate(cfg, processor, self.family)
        config = model.config
        self.hidden_size, self.num_layers = config.hidden_size, config.num_hidden_layers
        self.samples = cfg.audio_frames * cfg.sample_rate // 100
        self.patch_layout = (int(model._get_feat_extract_output_lengths(torch.tensor(self.samples))),)
        self.final_norm = model.encoder.layer_norm if config.do_stable_layer_norm else None
        self.masked = bool(processor.return_attention_mask)

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "mean") -> torch.Tensor:
        self.check_num_tokens(num_tokens)
        values, mask = media[:, 0], media[:, 1].round().long()
        out = self.model(input_values=values, attention_mask=mask if self.masked else None, output_hidden_states=True)
        # the mean over the clip's own frames, not the padded ones
        frames = self.model._get_feature_vector_attention_mask(out.hidden_states[-1].shape[1], mask) \
            if readout == "mean" else None
        return self.last_block_tokens(out.hidden_states, num_tokens, self.final_norm, readout, 0, token_mask=frames)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """Mono waveform at the extractor's rate -> `(2, samples)`: the extractor's values, then the padding mask."""
        return WaveformAndMask(self.processor, self.samples)


class WaveformAndMask(AudioFeatureTransform):
    def __init__(self, extractor: Any, samples: int):
        super().__init__(extractor, "input_values", extra={"padding": "max_length", "max_length": samples,
                                                           "truncation": True, "return_attention_mask": True})

    def __call__(self, waveform: np.ndarray) -> torch.Tensor:
        features = self.features(waveform)
        return torch.stack([features["input_values"][0], features["attention_mask"][0].float()])
