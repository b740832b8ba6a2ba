"""Audio decoding (librosa, PyAV as fallback) and the AST input: a normalised Kaldi fbank.

Spec (eP-ALM / AST): resample to 16 kHz, subtract the mean, Kaldi fbank with 128 mel bins, 25 ms Hanning
window, 10 ms shift, no energy, no dither (`htk_compat` only moves the energy term, absent here), pad or cut
to 1024 frames, normalise `(x + 4.2677393) / (4.5689974 * 2)`; SpecAugment (frequency 24, time 96) in training.
"""
from __future__ import annotations

import os
import warnings

import av
import librosa
import numpy as np
import torch
from transformers import ASTFeatureExtractor

from dataset.media.errors import MediaDecodeError

# AudioSet statistics of the fbank, used by AST and the eP-ALM reference.
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
KALDI_WINDOW = 400  # 25 ms at 16 kHz: a shorter waveform gives no frame at all


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Decode any file librosa reads (wav, flac, ogg, mp3 ...), or failing that anything FFmpeg reads
    (m4a, webm, video files), to a mono float32 waveform at `sample_rate`."""
    if not os.path.isfile(path):
        raise MediaDecodeError(path, "file not found")
    try:
        with warnings.catch_warnings():
            # librosa warns before trying its deprecated audioread fallback; the outcome is what matters
            warnings.simplefilter("ignore")
            waveform, _ = librosa.load(path, sr=sample_rate, mono=True)
    except Exception as librosa_error:  # librosa's backends raise many unrelated types
        try:
            waveform = _load_with_pyav(path, sample_rate)
        except (av.error.FFmpegError, OSError, ValueError) as av_error:
            raise MediaDecodeError(
                path, f"not decodable audio (librosa: {librosa_error!r}; PyAV: {av_error!r})"
            ) from av_error
    if waveform.size == 0:
        raise MediaDecodeError(path, "no audio samples")
    if not np.all(np.isfinite(waveform)):
        raise MediaDecodeError(path, "audio contains NaN or infinite samples")
    return waveform.astype(np.float32, copy=False)


def _load_with_pyav(path: str, sample_rate: int) -> np.ndarray:
    chunks = []
    with av.open(path) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        native_rate = stream.rate
        to_mono = av.AudioResampler(format="flt", layout="mono", rate=native_rate)
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray().reshape(-1) for out in to_mono.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in to_mono.resample(None))
    waveform = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    # resample with librosa so both paths share one resampler
    return librosa.resample(waveform, orig_sr=native_rate, target_sr=sample_rate)


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
