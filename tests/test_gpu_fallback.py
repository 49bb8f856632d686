"""NVDEC on a machine where the CUDA device cannot be created: real RTSP, real decoding.

The one fake here is the device creation itself: PyAV's call that asks FFmpeg for a CUDA
device (``av_hwdevice_ctx_create``) raises what FFmpeg returns when libcuda loads but
``cuInit``/``cuCtxCreate`` fail (``AVERROR_EXTERNAL``, PyAV's ``ExternalError``; NOTES
2026-11-29). That fault is only reachable on hardware we lack. Everything else (the RTSP
server, the stream opens, decoding, reconnects) is real. The real NVDEC path runs in
``bench/gpu_check.sh`` on a GPU machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import av
import pytest

from gate import nvdec
from gate import source as source_module
from gate.config import CameraConfig, SourceConfig
from gate.schema import Keys
from tests.support.gates import RunningGate, read_stream, statuses
from tests.support.servers import start_rtsp
from tests.support.waiting import wait_for

AVERROR_EXTERNAL_TAG = b"EXT "


def _raise_external_error() -> None:
    """Raise exactly what PyAV raises for FFmpeg's AVERROR_EXTERNAL (ExternalError)."""
    av.error.err_check(-av.error.tag_to_code(AVERROR_EXTERNAL_TAG))


class FailingCudaDevice:
    """Stands in for PyAV's CUDA device creation on a host where cuInit fails.

    Creating a real device takes a while (``cuInit`` and the context: hundreds of ms), so
    this one takes ``latency_s`` too: cameras that start together then really ask at the
    same time, which is what the once-per-process probe must survive.
    """

    def __init__(self, latency_s: float = 0.3) -> None:
        self.calls = 0
        self.latency_s = latency_s
        self._lock = threading.Lock()

    def __call__(self, options: dict[str, str]) -> None:
        with self._lock:
            self.calls += 1
        threading.Event().wait(self.latency_s)
        _raise_external_error()


@pytest.fixture
def failing_device(monkeypatch):
    """A fresh process-wide NVDEC probe whose device creation raises ExternalError."""
    device = FailingCudaDevice()
    monkeypatch.setattr(nvdec, "NVDEC", nvdec.NvdecProbe(create_device=device))
    return device


@pytest.fixture
def open_log(monkeypatch):
    """Every ``av.open`` of a stream (the real one, counted): URL and whether a hwaccel was asked."""
    calls: list[tuple[str, bool]] = []
    lock = threading.Lock()
    real_open = av.open

    def counting_open(path, *args, **kwargs):
        with lock:
            calls.append((str(path), kwargs.get("hwaccel") is not None))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    return calls


class SourceThread:
    """One CameraSource decoding in its own thread, recording its state reports."""

    def __init__(self, url: str, config: SourceConfig) -> None:
        self.states: list[tuple[str, str]] = []
        self.stop = threading.Event()
        self.source = source_module.CameraSource(url, config, self.stop, on_state=self._on_state)
        self.frames = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_state(self, state: str, reason: str) -> None:
        self.states.append((state, reason))

    def _run(self) -> None:
        for _ in self.source.frames():
            self.frames += 1

    def count(self, state: str) -> int:
        return sum(1 for s, _ in self.states if s == state)


def _config(hwaccel: str) -> SourceConfig:
    return SourceConfig(hwaccel=hwaccel, open_timeout_s=3, read_timeout_s=3, backoff_initial_s=0.2, backoff_max_s=1)


def test_auto_decodes_in_software_when_the_cuda_device_cannot_be_created(looped_video, failing_device, open_log):
    server = start_rtsp({"a": looped_video, "b": looped_video, "c": looped_video})
    port = server.port
    cameras = {name: SourceThread(server.url(name), _config("auto")) for name in "abc"}
    try:
        for camera in cameras.values():
            camera.thread.start()
        wait_for(lambda: all(c.count("online") == 1 and c.frames > 10 for c in cameras.values()), what="online")
        # Each camera opened its stream once, without a hardware device, and says what decodes it.
        assert Counter(url for url, _ in open_log) == {server.url(n): 1 for n in "abc"}
        assert not any(hw for _, hw in open_log)
        for camera in cameras.values():
            assert camera.source.decoder == "h264 (software)"
            assert ("online", "decoder h264 (software)") in camera.states
        assert failing_device.calls == 1  # one probe for the whole process

        server.stop()  # every camera loses its stream, retries, and comes back when the server does
        wait_for(lambda: all(c.count("offline") >= 2 for c in cameras.values()), what="retries while down")
        server = start_rtsp({"a": looped_video, "b": looped_video, "c": looped_video}, port=port)
        wait_for(lambda: all(c.count("online") == 2 for c in cameras.values()), 60, "back online")
    finally:
        for camera in cameras.values():
            camera.stop.set()
        server.stop()
    for camera in cameras.values():
        camera.thread.join(15)
    opens = Counter(url for url, _ in open_log)
    for name, camera in cameras.items():
        # One open per attempt: each attempt but the last one ended in an offline report.
        assert opens[server.url(name)] == camera.count("offline") + 1
    assert not any(hw for _, hw in open_log)
    assert failing_device.calls == 1  # reconnects never probed again


def test_cuda_is_strict_and_names_the_cause_while_auto_cameras_run(looped_video, failing_device, open_log):
    server = start_rtsp({"cam": looped_video})
    strict = SourceThread(server.url("cam"), _config("cuda"))
    relaxed = SourceThread(server.url("cam"), _config("auto"))
    try:
        strict.thread.start()
        relaxed.thread.start()
        strict.thread.join(30)
        assert not strict.thread.is_alive()  # a camera that cannot work as configured stops retrying
        wait_for(lambda: relaxed.count("online") == 1 and relaxed.frames > 10, what="the auto camera online")
    finally:
        strict.stop.set()
        relaxed.stop.set()
        server.stop()
    relaxed.thread.join(15)
    assert [s for s, _ in strict.states] == ["error"]
    reason = strict.states[0][1]
    assert "hwaccel: cuda" in reason and "NVDEC" in reason
    assert "ExternalError" in reason and "external library" in reason
    assert strict.frames == 0
    assert not any(hw for _, hw in open_log)  # the strict camera never opened its stream for nothing
    assert Counter(url for url, _ in open_log)[server.url("cam")] == 1  # the auto camera's one open
    assert failing_device.calls == 1


def test_gate_status_and_cameras_name_the_decoder(redis_server, redis_client, rtsp_server, failing_device):
    keys = Keys()
    gate = RunningGate(redis_server.url, [CameraConfig(name="door", url=rtsp_server.url("cam"))], hwaccel="auto")
    try:
        entries = read_stream(redis_client, keys.status, lambda e: any(
            s["name"] == "door" and s["state"] == "online" for s in statuses(e)))
        online = next(s for s in statuses(entries) if s["name"] == "door" and s["state"] == "online")
        assert online["reason"] == "decoder h264 (software)"
        deadline = time.monotonic() + 30
        rows: dict = {}
        while time.monotonic() < deadline:
            listing = subprocess.run([sys.executable, "-m", "gate.cli", "cameras", "--json", "--redis",
                                      redis_server.url], capture_output=True, text=True, check=True)
            rows = {row["name"]: row for row in json.loads(listing.stdout)}
            if rows.get("door", {}).get("decoder"):
                break
            threading.Event().wait(0.2)
        table = subprocess.run([sys.executable, "-m", "gate.cli", "cameras", "--redis", redis_server.url],
                               capture_output=True, text=True, check=True).stdout
    finally:
        gate.close()
    assert rows["door"]["decoder"] == "h264 (software)"
    header, line = table.splitlines()[0], next(row for row in table.splitlines() if row.startswith("door"))
    assert "decoder" in header and "h264 (software)" in line
    assert failing_device.calls == 1


def test_probe_runs_once_across_threads_and_keeps_its_answer():
    device = FailingCudaDevice(latency_s=0.2)
    probe = nvdec.NvdecProbe(create_device=device)
    answers: dict[int, object] = defaultdict(list)
    threads = [threading.Thread(target=lambda i=i: answers[i].append(probe.status())) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    statuses_seen = [answer[0] for answer in answers.values()]
    assert len(statuses_seen) == 6 and device.calls == 1
    assert all(not s.usable and "ExternalError" in s.reason for s in statuses_seen)
    assert probe.status() is statuses_seen[0]


def test_the_probe_shares_the_primary_context_or_retries_without_it_and_a_failed_open_rechecks():
    """The first device asks for CUDA's primary context (one context shared by every camera); a
    primary context already active with other flags (ENOTSUP) gets one retry with a context per
    open; after an NVDEC open fails, ``recheck`` asks again and remembers a device gone bad."""
    import errno

    calls: list[dict[str, str]] = []

    def device_with(outcomes):
        replies = iter(outcomes)

        def create(options: dict[str, str]) -> object:
            calls.append(dict(options))
            outcome = next(replies)
            if outcome == "enotsup":
                av.error.err_check(-errno.ENOTSUP)
            if outcome == "external":
                _raise_external_error()
            return object()
        return create

    shared = nvdec.NvdecProbe(create_device=device_with(["ok"]))
    assert shared.status() == nvdec.NvdecStatus(True, options=nvdec.SHARED_CONTEXT)
    assert calls == [{"primary_ctx": "1"}]

    calls.clear()
    probe = nvdec.NvdecProbe(create_device=device_with(["enotsup", "ok", "ok", "external"]))
    status = probe.status()
    assert status.usable and status.options == {} and calls == [{"primary_ctx": "1"}, {}]
    assert probe.recheck() is None  # the device still comes up: the open failed for another reason
    reason = probe.recheck()
    assert reason is not None and "ExternalError" in reason
    assert probe.status() == nvdec.NvdecStatus(False, reason) and calls[2:] == [{}, {}]
    assert probe.recheck() == reason and len(calls) == 4  # remembered: not asked again
