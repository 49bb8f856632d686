"""Camera sources: PyAV over RTSP (TCP by default) or files, with reconnects.

Every open has open and read timeouts (a hung server never blocks a reader forever);
a stream that ends, errors or stalls is a disconnect: the source reports it, waits with
exponential backoff and reopens. Decoding uses FFmpeg's own threads; a frame is
converted to BGR only when something looks at it. NVDEC is tried when asked or
available and falls back to software silently (NOTES: without a GPU, the cuda hwaccel
raises PermissionError at open).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from gate.config import SourceConfig
from gate.redact import redact_text, redact_url

log = logging.getLogger(__name__)
# 8-bit pixel formats whose first plane is the luma (grey) image.
LUMA_FIRST_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"})


class Frame:
    """A decoded frame and the source's own size; BGR images made on demand, once each.

    Detection looks at a few frames per second of a 25–30 fps stream: converting every
    frame to BGR (a colour conversion and a copy) would cost as much as decoding it. So
    nothing is converted until asked for, and each size is converted once: FFmpeg's
    scaler makes the detector's small image straight from the decoded YUV planes (one
    pass, area filter), and the working image for alignment is only made for frames
    whose faces are scored.
    """

    def __init__(self, ts: float, video: av.VideoFrame, work_w: int, work_h: int) -> None:
        self.ts = ts
        self.source_w, self.source_h = video.width, video.height
        self.work_w, self.work_h = work_w, work_h
        self._video = video
        self._images: dict[tuple[int, int], np.ndarray] = {}

    def _convert(self, width: int, height: int) -> np.ndarray:
        image = self._images.get((width, height))
        if image is None:
            image = self._video.to_ndarray(format="bgr24", width=width, height=height, interpolation="AREA")
            self._images[(width, height)] = image
        return image

    @property
    def image(self) -> np.ndarray:
        """BGR at the working resolution (faces are aligned from it)."""
        return self._convert(self.work_w, self.work_h)

    def image_at(self, max_side: int) -> np.ndarray:
        """BGR with the longer side at most ``max_side`` (and never above the working size)."""
        return self._convert(*_working_size(self.work_w, self.work_h, max_side))

    def gray_at(self, width: int) -> np.ndarray:
        """Small grayscale copy ``width`` pixels wide, resized straight from the decoded luma plane.

        No colour conversion and no copy of the full frame: the luma plane is viewed in place
        and resized by OpenCV (0.25 ms at 1080p, against 1.6 ms for FFmpeg's area scaler).
        """
        height = max(1, round(width * self.source_h / self.source_w))
        video = self._video
        if video.format.name in LUMA_FIRST_FORMATS:
            plane = video.planes[0]
            luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
            return cv2.resize(luma, (width, height), interpolation=cv2.INTER_LINEAR)
        return video.to_ndarray(format="gray", width=width, height=height, interpolation="FAST_BILINEAR")

    @property
    def scale(self) -> float:
        """Source pixels per working-image pixel."""
        return self.source_w / self.work_w


class SourceError(Exception):
    """Why a source went offline (message already free of credentials)."""


class EndOfFile(Exception):
    """A file source played to its end (and does not loop): the camera is done."""


def _is_file(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


class CameraSource:
    """Frames of one camera, forever: reconnects until ``stop`` is set.

    ``on_state(state, reason)`` is called with ``online``/``offline`` transitions.
    """

    def __init__(self, url: str, config: SourceConfig, stop: threading.Event, transport: str = "tcp",
                 max_side: int = 1280, on_state: Callable[[str, str], None] | None = None) -> None:
        self.url = url
        self.config = config
        self.stop = stop
        self.transport = transport
        self.max_side = max_side
        self.on_state = on_state or (lambda state, reason: None)
        self.reconnects = 0
        self.frame_count = 0
        self.online = False

    @property
    def unpaced(self) -> bool:
        """A file read as fast as it decodes: its consumers may wait (nothing is lost) instead of dropping."""
        return _is_file(self.url) and not self.config.realtime_files

    def _open(self):
        options = {}
        timeout = (self.config.open_timeout_s, self.config.read_timeout_s)
        if not _is_file(self.url):
            options = {"rtsp_transport": self.transport} if self.url.startswith(("rtsp", "rtsps")) else {}
        path = self.url[len("file://"):] if self.url.startswith("file://") else self.url
        if _is_file(self.url) and not Path(path).is_file():
            raise SourceError(f"no such file: {path}")
        hwaccel = None
        if self.config.hwaccel != "none" and "cuda" in av.codec.hwaccel.hwdevices_available():
            hwaccel = av.codec.hwaccel.HWAccel(device_type="cuda", allow_software_fallback=True)
        try:
            return av.open(path, options=options, timeout=timeout, hwaccel=hwaccel) if hwaccel else \
                av.open(path, options=options, timeout=timeout)
        except av.error.PermissionError:
            return av.open(path, options=options, timeout=timeout)  # no GPU: software decoding

    def _frames_once(self) -> Iterator[Frame]:
        try:
            container = self._open()
        except av.error.FFmpegError as exc:
            raise SourceError(redact_text(f"cannot open: {type(exc).__name__}: {exc.strerror or exc}")) from None
        except OSError as exc:
            raise SourceError(redact_text(f"cannot open: {exc}")) from None
        with container:
            if not container.streams.video:
                raise SourceError("no video stream in the source")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise SourceError("unsupported codec: no decoder for this stream")
            stream.thread_type = "AUTO"
            is_file = _is_file(self.url)
            started = time.monotonic()
            wall_start = time.time()
            first_pts = None
            try:
                for frame in container.decode(stream):
                    if self.stop.is_set():
                        return
                    work_w, work_h = _working_size(frame.width, frame.height, self.max_side)
                    ts = time.time()
                    if is_file and frame.pts is not None and frame.time_base is not None:
                        seconds = float(frame.pts * frame.time_base)
                        first_pts = seconds if first_pts is None else first_pts
                        offset = seconds - first_pts
                        ts = wall_start + offset
                        if self.config.realtime_files:
                            delay = offset - (time.monotonic() - started)
                            if delay > 0 and self.stop.wait(delay):
                                return
                    self.frame_count += 1
                    yield Frame(ts, frame, work_w, work_h)
            except av.error.FFmpegError as exc:
                raise SourceError(redact_text(f"stream error: {type(exc).__name__}: {exc.strerror or exc}")) from None
        if not is_file:
            raise SourceError("end of stream")
        if not self.config.loop_files:
            raise EndOfFile("end of file")

    def frames(self) -> Iterator[Frame]:
        """Frames across reconnects; returns when ``stop`` is set."""
        backoff = self.config.backoff_initial_s
        while not self.stop.is_set():
            try:
                for frame in self._frames_once():
                    if not self.online:
                        self.online = True
                        backoff = self.config.backoff_initial_s
                        self.on_state("online", "")
                    yield frame
                if self.stop.is_set():
                    return
                continue  # a looping file source: reopen at once
            except EndOfFile:
                self.on_state("ended", "end of file")
                return
            except SourceError as exc:
                reason = str(exc)
            if self.stop.is_set():
                return
            self.on_state("offline", reason)  # every failed attempt: operators see retries
            self.online = False
            self.reconnects += 1
            log.info("camera %s offline (%s); retry in %.1fs", redact_url(self.url), reason, backoff)
            if self.stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.config.backoff_max_s)
