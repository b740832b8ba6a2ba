"""Media decoding: frame sampling, one-pass video decoding, images, audio fbank; bad files -> MediaDecodeError."""
from __future__ import annotations

import math
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from epalm.common.errors import MediaDecodeError
from epalm.models.modalities.audio.decode import load_audio
from epalm.models.modalities.audio.modality import AUDIOSET_MEAN, AUDIOSET_STD, FbankFeatures, spec_augment
from epalm.models.modalities.image.decode import load_image
from epalm.models.modalities.video.decode import load_video_frames, sample_frame_indices, select_frames

# ---------------------------------------------------------------- frame sampling


def test_test_time_sampling_takes_each_segments_middle():
    assert sample_frame_indices(80, 8, train=False) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert sample_frame_indices(8, 8, train=False) == list(range(8))


def test_training_sampling_is_random_within_each_segment():
    draws = [sample_frame_indices(100, 4, train=True, rng=np.random.default_rng(seed)) for seed in range(50)]
    for draw in draws:
        for segment, index in enumerate(draw):
            assert segment * 25 <= index < (segment + 1) * 25
    assert len({tuple(d) for d in draws}) > 40
    with pytest.raises(ValueError, match="rng"):
        sample_frame_indices(100, 4, train=True)


def test_short_video_repeats_its_last_frame():
    assert sample_frame_indices(3, 8, train=False) == [0, 1, 2, 2, 2, 2, 2, 2]
    assert sample_frame_indices(3, 8, train=True, rng=np.random.default_rng(0)) == [0, 1, 2, 2, 2, 2, 2, 2]


def test_select_frames_counts_frames_when_metadata_is_missing_or_wrong():
    # any frame objects work: here the frame is its own index
    exact, n = select_frames(range(40), 40, 4, False, None, max_buffered=64)
    assert (exact, n) == ([5, 15, 25, 35], 40)
    for wrong in (0, 25, 90):  # unknown, understated, overstated
        frames, n = select_frames(range(40), wrong, 4, False, None, max_buffered=64)
        assert (frames, n) == ([5, 15, 25, 35], 40)
    # longer than the reserve: nearest kept frame, still inside its segment
    frames, n = select_frames(range(1000), 0, 4, False, None, max_buffered=16)
    assert n == 1000
    for segment, index in enumerate(frames):
        assert segment * 250 <= index < (segment + 1) * 250 and abs(index - (segment * 250 + 125)) <= 64
    assert select_frames(iter(()), 10, 4, False, None, 16) == ([], 0)


# ---------------------------------------------------------------- video files


def _write_video(path, levels: list[int], codec: str = "libx264", pts: list[int] | None = None) -> None:
    """Frame i is a flat grey of value levels[i], so a decoded frame tells which frame it was."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        if pts is not None:
            stream.time_base = Fraction(1, 1000)
        for i, level in enumerate(levels):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), level, np.uint8), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _levels_to_indices(frames: np.ndarray, step: int = 10) -> list[int]:
    return [int(round(frame.mean() / step)) for frame in frames]


LEVELS = [10 * i for i in range(24)]


def test_mp4_decodes_the_segment_middles(tmp_path):
    path = tmp_path / "clip.mp4"
    _write_video(path, LEVELS)
    frames = load_video_frames(str(path), 4, train=False)
    assert frames.shape == (4, 24, 32, 3) and frames.dtype == np.uint8
    assert _levels_to_indices(frames) == sample_frame_indices(24, 4, train=False) == [3, 9, 15, 21]
    train = load_video_frames(str(path), 4, train=True, rng=np.random.default_rng(0))
    for segment, index in enumerate(_levels_to_indices(train)):
        assert segment * 6 <= index < (segment + 1) * 6


def test_webm_without_a_frame_count_and_variable_frame_rate(tmp_path):
    webm = tmp_path / "clip.webm"
    _write_video(webm, LEVELS, codec="libvpx-vp9")
    with av.open(str(webm)) as c:
        assert c.streams.video[0].frames == 0  # the container does not say: frames are counted
    assert _levels_to_indices(load_video_frames(str(webm), 4, train=False)) == [3, 9, 15, 21]
    vfr = tmp_path / "vfr.mp4"  # irregular timestamps: sampling goes by frame, not by time
    _write_video(vfr, LEVELS, pts=[int(1000 * math.sqrt(i)) for i in range(24)])
    assert _levels_to_indices(load_video_frames(str(vfr), 4, train=False)) == [3, 9, 15, 21]


def test_short_video_repeats_the_last_decoded_frame(tmp_path):
    path = tmp_path / "short.mp4"
    _write_video(path, [40, 80, 120])
    assert _levels_to_indices(load_video_frames(str(path), 6, train=False), step=40) == [1, 2, 3, 3, 3, 3]


def test_bad_video_files_raise_media_decode_error(tmp_path):
    with pytest.raises(MediaDecodeError, match="not found"):
        load_video_frames(str(tmp_path / "missing.mp4"), 4, train=False)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaDecodeError, match="empty file"):  # the check every decoder shares
        load_video_frames(str(tmp_path / "empty.mp4"), 4, train=False)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 50)
    with pytest.raises(MediaDecodeError) as info:
        load_video_frames(str(garbage), 4, train=False)
    assert info.value.path == str(garbage)
    good = tmp_path / "good.mp4"
    _write_video(good, LEVELS)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MediaDecodeError):
        load_video_frames(str(truncated), 4, train=False)
    sound = tmp_path / "sound.wav"
    _write_wav(sound, np.zeros(1600), 16000)
    with pytest.raises(MediaDecodeError, match="no video stream"):
        load_video_frames(str(sound), 4, train=False)


# ---------------------------------------------------------------- images


def test_load_image_converts_to_rgb_and_rejects_bad_files(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("L", (7, 5), 128).save(grey)
    image = load_image(str(grey))
    assert image.mode == "RGB" and image.size == (7, 5)
    with pytest.raises(MediaDecodeError, match="not found"):
        load_image(str(tmp_path / "missing.jpg"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(MediaDecodeError):
        load_image(str(corrupt))
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[:400])
    with pytest.raises(MediaDecodeError):
        load_image(str(truncated))


# ---------------------------------------------------------------- audio


def _write_wav(path, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    """16-bit PCM with the standard library (no soundfile needed to write)."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory):
    """A 2 s, 1 kHz stereo tone at 22.05 kHz; loading it once also warms librosa for the module."""
    rate = 22050
    t = np.arange(2 * rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    _write_wav(path, np.stack([tone, tone], axis=1).reshape(-1), rate, channels=2)
    load_audio(str(path))
    return path


def _kaldi_mel_bin_of(frequency: float, mel_bins: int = 128, low: float = 20.0, high: float = 8000.0) -> int:
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    delta = (mel(high) - mel(low)) / (mel_bins + 1)
    centres = [mel(low) + (i + 1) * delta for i in range(mel_bins)]
    return int(np.argmin([abs(c - mel(frequency)) for c in centres]))


def test_audio_is_resampled_to_16k_mono_and_gives_the_spec_fbank(tone_wav):
    waveform = load_audio(str(tone_wav), sample_rate=16000)
    assert waveform.dtype == np.float32 and waveform.ndim == 1 and abs(len(waveform) - 32000) <= 1
    features = FbankFeatures()(waveform)
    assert features.shape == (1024, 128) and features.dtype == torch.float32
    voiced = 198  # (32000 - 400) // 160 + 1 frames of 25 ms every 10 ms
    padding = (0.0 - AUDIOSET_MEAN) / (AUDIOSET_STD * 2)  # zero-padded frames, normalised
    torch.testing.assert_close(features[voiced:], torch.full((1024 - voiced, 128), padding))
    assert not torch.allclose(features[voiced - 1], torch.full((128,), padding))
    peak = int(features[:voiced].mean(dim=0).argmax())
    assert abs(peak - _kaldi_mel_bin_of(1000.0)) <= 1
    # the waveform's mean is removed first: a DC offset changes nothing
    torch.testing.assert_close(FbankFeatures()(waveform + 0.1), features, atol=1e-3, rtol=0)


def test_spec_augment_masks_one_band_of_each_axis_in_training_only(tone_wav):
    masked = spec_augment(np.ones((1024, 128), np.float32), 24, 96, torch.Generator().manual_seed(0))
    zero_columns = np.where((masked == 0).all(axis=0))[0]
    zero_rows = np.where((masked == 0).all(axis=1))[0]
    assert 0 < len(zero_columns) < 24 and 0 < len(zero_rows) < 96
    assert np.all(np.diff(zero_columns) == 1) and np.all(np.diff(zero_rows) == 1)  # contiguous bands
    waveform = load_audio(str(tone_wav))
    torch.manual_seed(3)
    train = FbankFeatures(train=True)(waveform)
    test = FbankFeatures(train=False)(waveform)
    assert train.shape == test.shape and not torch.equal(train, test)
    torch.testing.assert_close(FbankFeatures(train=False)(waveform), test)  # test time is deterministic


def test_audio_in_a_container_librosa_cannot_read_falls_back_to_pyav(tmp_path, tone_wav, monkeypatch):
    import epalm.models.modalities.audio.decode as audio

    calls = []
    real = audio._load_with_pyav
    monkeypatch.setattr(audio, "_load_with_pyav", lambda *args: calls.append(args) or real(*args))
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=22050)
        tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(22050) / 22050)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 22050
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    waveform = load_audio(str(path))
    assert calls, "expected librosa to fail on AAC-in-MP4 and PyAV to decode it"
    assert abs(len(waveform) - 16000) < 2000  # AAC adds priming samples


def test_bad_audio_files_raise_media_decode_error(tmp_path, tone_wav):
    with pytest.raises(MediaDecodeError, match="not found"):
        load_audio(str(tmp_path / "missing.wav"))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(MediaDecodeError, match="empty file"):
        load_audio(str(tmp_path / "empty.wav"))
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF nonsense" * 20)
    with pytest.raises(MediaDecodeError, match="not decodable audio"):
        load_audio(str(garbage))
