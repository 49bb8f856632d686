"""Faults the gate must survive without losing events: signals and Redis outages."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from gate.config import CameraConfig
from gate.schema import Event, Keys
from tests.support.servers import start_redis
from tests.test_gate import RunningGate, events_of, read_stream

KEYS = Keys()


def test_sigterm_ends_open_tracks_and_exits_zero(redis_server, redis_client, rtsp_server, tmp_path):
    config = tmp_path / "gate.yaml"
    config.write_text(f"cameras:\n  - name: cam\n    url: {rtsp_server.url('cam')}\n")
    process = subprocess.Popen([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                                redis_server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        read_stream(redis_client, KEYS.events, lambda e: any(ev.type == "new" for ev in events_of(e)), 60)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, process.stderr.read()[-2000:]
    assert took < 10
    events = events_of(read_stream(redis_client, KEYS.events, lambda e: True))
    opened = {e.event_id for e in events if e.type == "new"}
    assert opened and opened == {e.event_id for e in events if e.type == "end"}


def test_events_survive_a_redis_restart(rtsp_server, tmp_path):
    server = start_redis(tmp_path / "redis")
    port = server.port
    gate = RunningGate(server.url, [CameraConfig(name="cam", url=rtsp_server.url("cam"))])
    client = server.client()
    restarted = None
    try:
        first = events_of(read_stream(client, KEYS.events, lambda e: len(e) >= 1))
        server.stop()  # Redis goes away (no persistence: its data is gone too)
        gate.stop.set()  # the gate stops meanwhile: its end events must wait in the buffer
        time.sleep(0.5)  # a real outage lasts a while; nothing else synchronises on this
        restarted = start_redis(tmp_path / "redis2", port=port)
        gate.thread.join(30)
        client = restarted.client()
        after = events_of(read_stream(client, KEYS.events, lambda e: any(
            ev.type == "end" for ev in events_of(e)), 20))
    finally:
        gate.stop.set()
        if restarted:
            restarted.stop()
    ended = {e.event_id for e in after if e.type == "end"}
    assert {e.event_id for e in first if e.type == "new"} <= ended
    assert all(isinstance(e, Event) for e in after)



def test_redis_password_never_appears_in_outputs(rtsp_server, tmp_path):
    server = start_redis(tmp_path / "redis", extra=("--requirepass", "r3dis-S3cret"))
    url = f"redis://:r3dis-S3cret@127.0.0.1:{server.port}/0"
    client = server.client()
    client.connection_pool.connection_kwargs["password"] = "r3dis-S3cret"
    config = tmp_path / "gate.yaml"
    config.write_text(f"cameras:\n  - name: cam\n    url: {rtsp_server.url('cam').replace('rtsp://', 'rtsp://u:camPW@')}\n")
    process = subprocess.Popen([sys.executable, "-m", "gate.cli", "-v", "run", "--config", str(config), "--redis", url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = read_stream(client, KEYS.status, lambda e: any(f.get(b"name") == b"cam" for _, f in e), 60)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()
    everything = out + err + repr(status)
    assert "r3dis-S3cret" not in everything and "camPW" not in everything
    assert "***@" in out  # the gate printed where it connects, redacted
    wrong = subprocess.run([sys.executable, "-m", "gate.cli", "cameras", "--redis",
                            f"redis://:wrong-S3cret@127.0.0.1:{server.port}/0"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "wrong-S3cret" not in wrong.stdout + wrong.stderr
