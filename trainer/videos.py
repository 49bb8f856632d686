"""Sampled frames of a video file, decoded with PyAV, with clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from engines.errors import ImageReadError

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts"})


def sampled_frames(path: Path, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, BGR frame) for every ``step``-th decoded frame."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ImageReadError(f"cannot open video {path}: {exc}") from None
    with container:
        if not container.streams.video:
            raise ImageReadError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % step == 0:
                    yield index, frame.to_ndarray(format="bgr24")
        except av.error.FFmpegError as exc:
            raise ImageReadError(f"video {path} is corrupt after frame {index}: {exc}") from None
