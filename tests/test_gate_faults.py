"""Camera faults with the real RTSP server: killed, hung, restarted. Others keep working."""

from __future__ import annotations

import os
import signal

import pytest

from gate.config import CameraConfig
from gate.schema import Keys
from tests.support.gates import RunningGate, events_of, read_stream, statuses
from tests.support.servers import start_rtsp

KEYS = Keys()


def _states(entries, name):
    return [(s["state"], s["reason"]) for s in statuses(entries) if s["name"] == name and s["kind"] == "camera"]


@pytest.fixture
def steady(looped_video):
    """A second, independent camera server whose camera must not notice the faults."""
    server = start_rtsp({"cam": looped_video})
    yield server
    server.stop()


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_camera_goes_offline_reconnects_and_resumes(redis_server, redis_client, looped_video, steady, fault):
    faulty = start_rtsp({"cam": looped_video})
    port = faulty.port
    gate = RunningGate(redis_server.url, [CameraConfig(name="faulty", url=faulty.url("cam")),
                                          CameraConfig(name="steady", url=steady.url("cam"))])
    try:
        read_stream(redis_client, KEYS.events, lambda e: {ev.camera for ev in events_of(e)} >= {"faulty", "steady"})
        first_tracks = {ev.event_id for ev in events_of(read_stream(redis_client, KEYS.events, lambda e: True))
                        if ev.camera == "faulty"}
        steady_worker = gate.gate.workers["steady"]
        frames_before = steady_worker.frames
        if fault == "killed":
            faulty.process.kill()
            faulty.process.wait()
        else:
            os.kill(faulty.process.pid, signal.SIGSTOP)
        offline = read_stream(redis_client, KEYS.status, lambda e: ("offline" in [s for s, _ in _states(e, "faulty")]))
        reason = next(r for s, r in _states(offline, "faulty") if s == "offline")
        assert reason  # says why: end of stream / stream error / cannot open
        if fault == "killed":
            faulty = start_rtsp({"cam": looped_video}, port=port)
        else:
            faulty.process.kill()  # a hung server is replaced, as an operator would
            os.kill(faulty.process.pid, signal.SIGCONT)
            faulty.process.wait()
            faulty = start_rtsp({"cam": looped_video}, port=port)
        cut = len(offline)
        read_stream(redis_client, KEYS.status, lambda e: "online" in [s for s, _ in _states(e[cut:], "faulty")], 60)
        resumed = read_stream(redis_client, KEYS.events, lambda e: any(
            ev.camera == "faulty" and ev.type == "new" and ev.event_id not in first_tracks for ev in events_of(e)), 60)
        assert resumed
        # The other camera never went offline and kept decoding meanwhile.
        assert steady_worker.state == "online" and steady_worker.frames > frames_before + 25
        assert all(s == "online" for s, _ in _states(read_stream(redis_client, KEYS.status, lambda e: True),
                                                     "steady"))
        # Tracks of the faulty camera that were open when it dropped were ended.
        ended = {ev.event_id for ev in events_of(resumed) if ev.type == "end"}
        assert first_tracks <= ended
    finally:
        gate.close()
        faulty.stop()
