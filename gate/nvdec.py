"""NVDEC for the gate's sources: probed once per process, one CUDA context for all cameras.

Why a probe: ``av.codec.hwaccel.hwdevices_available()`` lists the device types FFmpeg was
built with, not devices that exist, and PyAV creates the hardware device inside
``av.open``, after the stream has been opened and probed. Asking for CUDA on every open
would open each stream twice on a CPU host (once with the device, which fails, once
without) and, when libcuda loads but ``cuInit``/``cuCtxCreate`` fail, raise
``av.error.ExternalError`` (FFmpeg's ``AVERROR_EXTERNAL``) from every open. So the first
camera that opens asks FFmpeg for a CUDA device once, without any stream, and every
camera of the process uses that answer.

Why ``primary_ctx``: PyAV 18 creates a new device for every codec context it opens
(``HWAccel.create`` calls ``av_hwdevice_ctx_create`` each time; there is no way to hand it
an existing device), and FFmpeg's ``cuda_context_init`` (libavutil/hwcontext_cuda.c) makes
a new CUDA context with ``cuCtxCreate`` for each device unless the ``primary_ctx`` option
is set, in which case it retains the device's primary context
(``cuDevicePrimaryCtxRetain``: one per device and process, reference counted). With it,
every camera, every reconnect and the probe share one context; the probe keeps its device,
so the context lives as long as the process instead of being rebuilt when the last camera
reconnects. FFmpeg refuses the primary context (``ENOTSUP``) when another library already
activated it with other flags than its ``CU_CTX_SCHED_BLOCKING_SYNC``; NVDEC then still
runs, on a context per open, with a warning.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import av
from av.codec.hwaccel import HWAccel

log = logging.getLogger(__name__)

SHARED_CONTEXT = {"primary_ctx": "1"}  # FFmpeg's CUDA device option: retain the primary context
PROBE_CODEC = "h264"  # every NVDEC generation decodes it; the device itself does not depend on the codec


class HardwareUnavailable(Exception):
    """``hwaccel: cuda`` was asked for and NVDEC cannot serve it (message names the cause)."""


def create_cuda_device(options: dict[str, str]) -> HWAccel:
    """A CUDA device from FFmpeg (``av_hwdevice_ctx_create``), as PyAV makes it for a decoder.

    Raises ``av.error.FFmpegError`` when the device cannot be created, or
    ``NotImplementedError`` when FFmpeg has no CUDA decoder configuration for the codec.
    """
    codec = av.codec.Codec(PROBE_CODEC, "r")
    return HWAccel(device_type="cuda", options=options, allow_software_fallback=False).create(codec)


def describe(exc: BaseException) -> str:
    """``Type: message`` of a device error (FFmpeg's own text, no paths or URLs involved)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {text}"


@dataclass(frozen=True)
class NvdecStatus:
    """What the probe found: usable (with the device options to open with), or why not."""

    usable: bool
    reason: str = ""
    options: dict[str, str] = field(default_factory=dict)


class NvdecProbe:
    """Whether this process can decode on NVDEC: decided once, by the first camera that asks.

    Thread-safe: cameras open in parallel threads; the first one probes while the others
    wait for its answer. ``create_device`` is the call that asks FFmpeg for the device.
    """

    def __init__(self, create_device: Callable[[dict[str, str]], object] = create_cuda_device) -> None:
        self._create_device = create_device
        self._lock = threading.Lock()
        self._status: NvdecStatus | None = None
        self._device: object | None = None  # held: keeps the shared CUDA context alive

    def status(self) -> NvdecStatus:
        with self._lock:
            if self._status is None:
                self._status = self._probe()
                if self._status.usable:
                    log.info("NVDEC available (%s)", "shared primary CUDA context" if self._status.options
                             else "one CUDA context per open")
                else:
                    log.info("NVDEC unusable, decoding in software: %s", self._status.reason)
            return self._status

    def _probe(self) -> NvdecStatus:
        if "cuda" not in av.codec.hwaccel.hwdevices_available():
            return NvdecStatus(False, "this FFmpeg build has no CUDA support")
        try:
            self._device = self._create_device(SHARED_CONTEXT)
            return NvdecStatus(True, options=dict(SHARED_CONTEXT))
        except (av.error.FFmpegError, NotImplementedError) as exc:
            if getattr(exc, "errno", None) != errno.ENOTSUP:
                return NvdecStatus(False, f"cannot create the CUDA device: {describe(exc)}")
            shared_refused = describe(exc)
        # The primary context is active with other flags (another CUDA library made it first).
        try:
            self._device = self._create_device({})
        except (av.error.FFmpegError, NotImplementedError) as exc:
            return NvdecStatus(False, f"cannot create the CUDA device: {describe(exc)}")
        log.warning("NVDEC cannot share CUDA's primary context (%s): each camera opens its own context",
                    shared_refused)
        return NvdecStatus(True)

    def recheck(self) -> str | None:
        """After an open with NVDEC failed: None if the device still works, else why (remembered)."""
        with self._lock:
            status = self._status
            if status is None or not status.usable:
                return status.reason if status else None
            try:
                self._create_device(status.options)
                return None
            except (av.error.FFmpegError, NotImplementedError) as exc:
                reason = f"cannot create the CUDA device: {describe(exc)}"
                self._status, self._device = NvdecStatus(False, reason), None
                log.warning("NVDEC became unusable, decoding in software from now on: %s", reason)
                return reason


NVDEC = NvdecProbe()  # the process's one answer


def hwaccel_for(mode: str) -> HWAccel | None:
    """The hardware decoding to open a stream with, for ``source.hwaccel`` = ``mode``.

    ``none``: software. ``auto``: NVDEC when the process found it usable, with FFmpeg's
    software fallback for streams NVDEC cannot decode. ``cuda``: NVDEC or
    :class:`HardwareUnavailable` naming the cause (no software fallback).
    """
    if mode == "none":
        return None
    status = NVDEC.status()
    if not status.usable:
        if mode == "cuda":
            raise HardwareUnavailable(f"hwaccel: cuda, but NVDEC is unusable: {status.reason}")
        return None
    return HWAccel(device_type="cuda", options=status.options, allow_software_fallback=mode != "cuda")


def decoder_name(codec_context) -> str:
    """``h264 (nvdec)`` or ``h264 (software)``: what decoded the frames so far.

    PyAV downloads hardware frames to system memory, so a frame does not tell; the codec
    context does: its pixel format stays ``cuda`` while NVDEC decodes and becomes the
    software format when FFmpeg fell back.
    """
    on_gpu = codec_context.is_hwaccel and codec_context.pix_fmt == "cuda"
    return f"{codec_context.codec.name} ({'nvdec' if on_gpu else 'software'})"
