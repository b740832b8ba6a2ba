"""Audio decoding to a mono waveform (librosa, PyAV as fallback). The AST input made from it, the fbank,
is the audio modality plugin's (models/modalities/audio/modality.py)."""
from __future__ import annotations

import warnings

import av
import librosa
import numpy as np

from epalm.common.errors import MediaDecodeError
from epalm.models.modalities.base import check_media_file


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Decode any file librosa reads (wav, flac, ogg, mp3 ...), or failing that anything FFmpeg reads
    (m4a, webm, video files), to a mono float32 waveform at `sample_rate`."""
    check_media_file(path)
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
