"""The audio modality: decoding to a mono waveform and AST's input, a normalised Kaldi fbank.

Spec (eP-ALM / AST): resample to 16 kHz, subtract the mean, Kaldi fbank with 128 mel bins, 25 ms Hanning
window, 10 ms shift, no energy, no dither (`htk_compat` only moves the energy term, absent here), pad or cut
to 1024 frames, normalise `(x + 4.2677393) / (4.5689974 * 2)`; SpecAugment (frequency 24, time 96) in training.
"""
from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import ASTFeatureExtractor

from epalm.models.modalities.audio.decode import load_audio
from epalm.models.modalities.base import Modality, register_modality

# AudioSet statistics of the fbank, used by AST and the eP-ALM reference.
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
KALDI_WINDOW = 400  # 25 ms at 16 kHz: a shorter waveform gives no frame at all


def spec_augment(
    fbank: np.ndarray, freq_mask: int, time_mask: int, generator: torch.Generator | None = None
) -> np.ndarray:
    """One frequency band and one time band set to 0, as torchaudio's Frequency/TimeMasking do in AST:
    width uniform in [0, mask), start uniform over the rest. Torch's RNG so DataLoader workers differ."""
    masked = fbank.copy()
    frames, bins = masked.shape
    for axis, max_width, size in ((1, freq_mask, bins), (0, time_mask, frames)):
        if max_width <= 0:
            continue
        width = int(torch.rand(1, generator=generator).item() * max_width)
        start = int(torch.rand(1, generator=generator).item() * (size - width))
        if axis == 1:
            masked[:, start : start + width] = 0.0
        else:
            masked[start : start + width, :] = 0.0
    return masked


class FbankFeatures:
    """Waveform at `sample_rate` -> normalised fbank `(target_frames, mel_bins)` float32 tensor."""

    def __init__(
        self,
        sample_rate: int = 16000,
        mel_bins: int = 128,
        target_frames: int = 1024,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        train: bool = False,
        freq_mask: int = 24,
        time_mask: int = 96,
    ):
        self.sample_rate = sample_rate
        self.mean, self.std = mean, std
        self.train = train
        self.freq_mask, self.time_mask = freq_mask, time_mask
        with warnings.catch_warnings():
            # with 128 bins over 512 FFT points Kaldi's lowest mel filters are empty; Kaldi keeps them too
            warnings.simplefilter("ignore", UserWarning)
            # numpy path (torchaudio absent): Kaldi fbank, hanning window, 25 ms / 10 ms, no energy, no dither
            self.extractor = ASTFeatureExtractor(
                sampling_rate=sample_rate, num_mel_bins=mel_bins, max_length=target_frames, do_normalize=False
            )

    def __call__(self, waveform: np.ndarray) -> torch.Tensor:
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"expected a mono waveform (samples,), got shape {waveform.shape}")
        waveform = waveform - waveform.mean()
        if waveform.size < KALDI_WINDOW:
            waveform = np.pad(waveform, (0, KALDI_WINDOW - waveform.size))
        fbank = self.extractor(waveform, sampling_rate=self.sample_rate, return_tensors="np")["input_values"][0]
        if self.train:
            # masks before normalisation, on the padded fbank, as AST's data loader does
            fbank = spec_augment(fbank, self.freq_mask, self.time_mask)
        return torch.from_numpy(((fbank - self.mean) / (self.std * 2)).astype(np.float32))

    def fingerprint(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "mel_bins": self.extractor.num_mel_bins,
            "frames": self.extractor.max_length,
            "fbank": "kaldi-hanning-25ms-10ms-no-energy-no-dither-mean-subtracted",
            "mean": self.mean,
            "std": self.std,
        }


@register_modality
class AudioModality(Modality):
    name, placeholder, data_key = "audio", "<audio>", "audios"

    def decode(self, path: str, train: bool, rng: np.random.Generator | None, encoder_cfg) -> Any:
        """A mono waveform at `encoder_cfg.sample_rate` (the encoder's transform makes the fbank)."""
        return load_audio(path, encoder_cfg.sample_rate)

    def preview_html(self, path: str, page_dir: Path) -> str:
        return f'<audio controls src="{html.escape(os.path.relpath(path, page_dir))}"></audio>'
