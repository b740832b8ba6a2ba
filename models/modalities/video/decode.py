"""Video decoding with PyAV: one frame per equal segment, in a single decoding pass.

The frame count in the container (`stream.frames`) is missing for WebM/MKV and can be wrong (variable frame
rate, damaged index), so the decoded frames are counted. The pass keeps the frames at the indices the
metadata count implies and, alongside, a bounded evenly spaced reserve of frames; when the decoded count
differs from the metadata, the indices are drawn again for the true count from that reserve (exact while
the video has at most `max_buffered` frames, nearest kept frame beyond).
"""
from __future__ import annotations

from typing import Iterable, TypeVar

import av
import numpy as np

from epalm.common.errors import MediaDecodeError
from epalm.models.modalities.base import check_media_file

T = TypeVar("T")


def sample_frame_indices(
    num_video_frames: int, num_frames: int, train: bool, rng: np.random.Generator | None = None
) -> list[int]:
    """One index per equal segment of the video: random within the segment (train) or its middle (test).

    A video with fewer than `num_frames` frames gives all its frames, then its last frame repeated.
    """
    if num_video_frames <= 0 or num_frames <= 0:
        raise ValueError(f"need positive frame counts, got video {num_video_frames}, wanted {num_frames}")
    if train and rng is None:
        raise ValueError("training frame sampling needs an rng (numpy Generator)")
    if num_video_frames < num_frames:
        return list(range(num_video_frames)) + [num_video_frames - 1] * (num_frames - num_video_frames)
    indices = []
    for segment in range(num_frames):
        # integer segment bounds: every segment holds at least one frame when num_video_frames >= num_frames
        start = segment * num_video_frames // num_frames
        end = (segment + 1) * num_video_frames // num_frames
        indices.append(int(rng.integers(start, end)) if train else (start + end) // 2)
    return indices


def select_frames(
    frames: Iterable[T],
    expected_count: int,
    num_frames: int,
    train: bool,
    rng: np.random.Generator | None,
    max_buffered: int,
) -> tuple[list[T], int]:
    """Pick `num_frames` frames from one pass over `frames`; returns them and the counted total.

    `expected_count` is the metadata frame count (0 when unknown). Works on any frame objects.
    """
    wanted = sample_frame_indices(expected_count, num_frames, train, rng) if expected_count > 0 else []
    wanted_set = set(wanted)
    picked: dict[int, T] = {}
    reserve: dict[int, T] = {}  # every `stride`-th frame, at most max_buffered of them
    stride = 1
    count = 0
    for index, frame in enumerate(frames):
        if index in wanted_set:
            picked[index] = frame
        if index % stride == 0:
            reserve[index] = frame
            if len(reserve) > max_buffered:
                stride *= 2
                reserve = {i: f for i, f in reserve.items() if i % stride == 0}
        count = index + 1
    if count == 0:
        return [], 0
    if count == expected_count:
        return [picked[i] for i in wanted], count
    last_kept = max(reserve)
    chosen = []
    for index in sample_frame_indices(count, num_frames, train, rng):
        nearest = min(round(index / stride) * stride, last_kept)
        chosen.append(reserve[nearest])
    return chosen, count


def load_video_frames(
    path: str,
    num_frames: int,
    train: bool,
    rng: np.random.Generator | None = None,
    max_buffered: int | None = None,
) -> np.ndarray:
    """Decode `num_frames` RGB frames `(T, H, W, 3)` uint8 from the first video stream, in one pass.

    max_buffered: size of the reserve used when the metadata frame count is missing or wrong
        (default max(64, 8 * num_frames) frames, kept in the decoder's compact YUV form).
    """
    check_media_file(path)
    max_buffered = max_buffered or max(64, 8 * num_frames)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            chosen, count = select_frames(
                container.decode(stream), stream.frames or 0, num_frames, train, rng, max_buffered
            )
            if count == 0:
                raise MediaDecodeError(path, "no decodable video frames")
            # frames may change size mid-stream: bring all to the first one's size
            width, height = chosen[0].width, chosen[0].height
            return np.stack([f.to_ndarray(format="rgb24", width=width, height=height) for f in chosen])
    except (av.error.FFmpegError, OSError) as error:
        raise MediaDecodeError(path, f"not decodable video ({error})") from error
