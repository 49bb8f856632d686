"""Camera sources: PyAV over RTSP (TCP by default) or files, with reconnects.

Every open has open and read timeouts (a hung server never blocks a reader forever);
a stream that ends, errors or stalls is a disconnect: the source reports it, waits with
exponential backoff and reopens. A stall is what ``source.watchdog_s`` says: no frame for
that long. The reader catches both kinds of stall itself and reconnects within that time:
packets that arrive without a frame (a camera whose video died while its audio goes on) are
checked at every packet, and a read that gets no data at all is ended by FFmpeg's read
timeout, capped for that (:func:`read_timeout_s`).

Decoding uses FFmpeg's own threads; a frame is converted to BGR only when something looks
at it. NVDEC is used when the process found
it usable (``gate/nvdec.py``: probed once per process, one CUDA context for all cameras);
each attempt opens the stream once, and the decoder in use is reported when the camera
comes online.
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

from gate import nvdec
from gate.config import SourceConfig
from gate.nvdec import HardwareUnavailable
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


def _duration_s(stream) -> float | None:
    """The video stream's duration from the file's header, in seconds (None when unknown)."""
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def read_timeout_s(config: SourceConfig) -> float:
    """FFmpeg's read timeout for a stream: ``read_timeout_s``, at most half of ``watchdog_s``.

    Nothing can end a read that waits for data from another thread: closing the container
    there is unsafe, and PyAV's interrupt callback compares only against this timeout. And
    FFmpeg's RTSP reader gives up at the second time-out, not the first (at the first it
    hands out the packet it had queued): measured against a frozen server, 2.0, 4.0 and
    8.1 s for 1, 2 and 4 s. Half the watchdog time makes a hung server's stream reconnect
    within the watchdog time.
    """
    return min(config.read_timeout_s, config.watchdog_s / 2)


def stall_reason(watchdog_s: float) -> str:
    """How a stall is reported, by the reader and by the supervisor's watchdog alike (one entry)."""
    return f"no frame for {watchdog_s:g} s (watchdog)"


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
        self.decoder = ""  # e.g. "h264 (software)" or "h264 (nvdec)", once a frame was decoded

    @property
    def unpaced(self) -> bool:
        """A file read as fast as it decodes: its consumers may wait (nothing is lost) instead of dropping."""
        return _is_file(self.url) and not self.config.realtime_files

    def _open(self):
        options = {}
        timeout = (self.config.open_timeout_s, read_timeout_s(self.config))
        if not _is_file(self.url):
            options = {"rtsp_transport": self.transport} if self.url.startswith(("rtsp", "rtsps")) else {}
        path = self.url[len("file://"):] if self.url.startswith("file://") else self.url
        if _is_file(self.url) and not Path(path).is_file():
            raise SourceError(f"no such file: {path}")
        mode = self.config.hwaccel
        hwaccel = nvdec.hwaccel_for(mode)  # no device asked for when the process found NVDEC unusable
        if hwaccel is None:
            return av.open(path, options=options, timeout=timeout)
        try:
            return av.open(path, options=options, timeout=timeout, hwaccel=hwaccel)
        except av.error.FFmpegError:
            # PyAV creates the device inside av.open: was it the stream or the device?
            device_error = nvdec.NVDEC.recheck()
            if device_error is None:
                raise  # the stream's own error
            if mode == "cuda":
                raise HardwareUnavailable(f"hwaccel: cuda, but NVDEC is unusable: {device_error}") from None
            return av.open(path, options=options, timeout=timeout)  # the device failed: software from now on
        except RuntimeError as exc:  # PyAV: no stream NVDEC can decode, and no fallback allowed
            raise HardwareUnavailable(f"hwaccel: cuda, but NVDEC cannot decode this stream: {exc}") from None

    def _frames_once(self) -> Iterator[Frame]:
        try:
            container = self._open()
        except HardwareUnavailable:
            raise
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
            played_s = 0.0  # of a file: how far its frames reached
            interval_s = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
            last_frame = time.monotonic()  # or the time the stream opened, before its first frame
            try:
                # Every stream's packets, not only the video's: the loop keeps control (and sees
                # the stall) while the video is silent but audio or data packets still arrive.
                for packet in container.demux():
                    if self.stop.is_set():
                        return
                    if time.monotonic() - last_frame >= self.config.watchdog_s:
                        raise SourceError(stall_reason(self.config.watchdog_s))
                    if packet.stream.index != stream.index:
                        continue
                    for frame in packet.decode():
                        work_w, work_h = _working_size(frame.width, frame.height, self.max_side)
                        ts = time.time()
                        if is_file and frame.pts is not None and frame.time_base is not None:
                            seconds = float(frame.pts * frame.time_base)
                            first_pts = seconds if first_pts is None else first_pts
                            offset = seconds - first_pts
                            played_s = max(played_s, offset + interval_s)
                            ts = wall_start + offset
                            if self.config.realtime_files:
                                delay = offset - (time.monotonic() - started)
                                if delay > 0 and self.stop.wait(delay):
                                    return
                        self.frame_count += 1
                        if not self.decoder:
                            self.decoder = nvdec.decoder_name(stream.codec_context)
                        last_frame = time.monotonic()
                        yield Frame(ts, frame, work_w, work_h)
            except av.error.FFmpegError as exc:
                raise SourceError(redact_text(f"stream error: {type(exc).__name__}: {exc.strerror or exc}")) from None
            if not is_file:
                raise SourceError("end of stream")
            expected_s = _duration_s(stream)
            if expected_s and played_s < expected_s - max(1.0, 0.01 * expected_s):
                # FFmpeg's threaded decoder drops a cut-off last packet silently: the header's
                # duration is what tells a truncated file from a short one.
                raise EndOfFile(f"file truncated: its video ends at {played_s:.1f} s of {expected_s:.1f} s")
        if not self.config.loop_files:
            raise EndOfFile("end of file")

    def frames(self) -> Iterator[Frame]:
        """Frames across reconnects; returns when ``stop`` is set or the camera cannot work as configured."""
        backoff = self.config.backoff_initial_s
        while not self.stop.is_set():
            self.decoder = ""
            try:
                for frame in self._frames_once():
                    if not self.online:
                        self.online = True
                        backoff = self.config.backoff_initial_s
                        self.on_state("online", f"decoder {self.decoder}")
                    yield frame
                if self.stop.is_set():
                    return
                continue  # a looping file source: reopen at once
            except EndOfFile as exc:
                self.on_state("ended", str(exc))
                return
            except HardwareUnavailable as exc:  # retrying cannot help: the process's answer is final
                self.on_state("error", redact_text(str(exc)))
                log.error("camera %s: %s", redact_url(self.url), redact_text(str(exc)))
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
