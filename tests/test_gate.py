"""The gate end to end: real RTSP server, real Redis, real models, real decoding."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict

import cv2
import numpy as np
import pytest

from gate.bestshot import BestShot
from gate.config import CameraConfig
from gate.schema import EVENT_FIELDS, Event, Keys
from tests.support.gates import RunningGate, events_of, read_stream, statuses
from tests.support.servers import start_rtsp
from tests.support.waiting import wait_for

KEYS = Keys()


class ScoreLog:
    """Records every quality the best-shot stage saw, per camera and track."""

    def __init__(self, monkeypatch) -> None:
        self.seen: dict[tuple[str, int], list[float]] = defaultdict(list)
        original = BestShot.on_scored

        def recording(shot, sample, quality):
            self.seen[(shot.camera, sample.track_id)].append(quality)
            return original(shot, sample, quality)

        monkeypatch.setattr(BestShot, "on_scored", recording)


@pytest.fixture
def two_cameras(looped_video):
    server = start_rtsp({"cam1": looped_video, "cam2": looped_video, "cam3": looped_video})
    yield server
    server.stop()


def test_one_camera_events_follow_the_schema_and_end_carries_the_best(redis_server, redis_client, rtsp_server,
                                                                      monkeypatch):
    scores = ScoreLog(monkeypatch)
    gate = RunningGate(redis_server.url, [CameraConfig(name="cam", url=rtsp_server.url("cam"))])
    try:
        read_stream(redis_client, KEYS.events, lambda e: len(e) >= 1)
        # Let the track collect a few more scored frames, then stop: tracks end with their best.
        read_stream(redis_client, KEYS.events, lambda e: sum(len(v) for v in scores.seen.values()) >= 8 or len(e) > 5,
                    timeout_s=30)
    finally:
        gate.close()
    entries = read_stream(redis_client, KEYS.events, lambda e: any(ev.type == "end" for ev in events_of(e)))
    events = events_of(entries)
    for _, fields in entries:
        assert {k.decode() for k in fields} == set(EVENT_FIELDS)
    by_id = defaultdict(list)
    for event in events:
        by_id[event.event_id].append(event)
    for _event_id, track_events in by_id.items():
        assert next(e.type for e in track_events) == "new" and track_events[-1].type == "end"
        assert [e.seq for e in track_events] == list(range(1, len(track_events) + 1))
        assert len({(e.camera, e.track) for e in track_events}) == 1
        end = track_events[-1]
        assert end.quality == pytest.approx(max(scores.seen[(end.camera, end.track)]), abs=1e-3)
        assert end.end_ts is not None and end.start_ts <= end.ts <= end.end_ts
    for event in events:
        assert event.camera == "cam" and event.model.startswith("sddfiqa-mfn@")
        assert (event.frame_w, event.frame_h) == (640, 360)
        x1, y1, x2, y2 = event.bbox
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
        assert len(event.landmarks) == 5 and 0 < event.det_score <= 1 and 0 <= event.quality <= 100
        face = cv2.imdecode(np.frombuffer(event.face_jpeg, np.uint8), cv2.IMREAD_COLOR)
        frame = cv2.imdecode(np.frombuffer(event.frame_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert face.shape == (112, 112, 3) and frame.shape == (360, 640, 3)
    status = statuses(read_stream(redis_client, KEYS.status, lambda e: len(e) >= 3))
    assert {"kind": "camera", "name": "cam", "state": "online"}.items() <= next(
        s for s in status if s["kind"] == "camera").items()


def test_cameras_attach_and_detach_at_runtime(redis_server, redis_client, two_cameras):
    gate = RunningGate(redis_server.url, [CameraConfig(name="cam1", url=two_cameras.url("cam1")),
                                          CameraConfig(name="cam2", url=two_cameras.url("cam2"))])
    try:
        read_stream(redis_client, KEYS.events, lambda e: {ev.camera for ev in events_of(e)} >= {"cam1", "cam2"})
        attach = subprocess.run([sys.executable, "-m", "gate.cli", "attach", "cam3", two_cameras.url("cam3"),
                                 "--redis", redis_server.url], capture_output=True, text=True)
        assert attach.returncode == 0, attach.stderr
        read_stream(redis_client, KEYS.events, lambda e: "cam3" in {ev.camera for ev in events_of(e)})
        detach = subprocess.run([sys.executable, "-m", "gate.cli", "detach", "cam3", "--redis", redis_server.url],
                                capture_output=True, text=True)
        assert detach.returncode == 0, detach.stderr
        entries = read_stream(redis_client, KEYS.events,
                              lambda e: any(ev.camera == "cam3" and ev.type == "end" for ev in events_of(e)))
        status = statuses(read_stream(redis_client, KEYS.status, lambda e: any(
            s["name"] == "cam3" and s["state"] == "stopped" for s in statuses(e))))
        assert any(s["name"] == "cam3" and s["reason"] == "detached" for s in status)
        assert "cam3" not in gate.gate.workers
        assert gate.gate.workers["cam1"].alive and gate.gate.workers["cam1"].state == "online"
        assert len(entries) >= 4
    finally:
        gate.close()
    events = events_of(read_stream(redis_client, KEYS.events, lambda e: True))
    cam3 = [e for e in events if e.camera == "cam3"]
    opened = {e.event_id for e in cam3 if e.type == "new"}
    ended = {e.event_id for e in cam3 if e.type == "end"}
    assert opened == ended


def test_a_restarted_gate_resumes_registered_cameras(redis_server, redis_client, rtsp_server):
    from gate.bus import connect
    from gate.registry import CameraRegistry

    CameraRegistry(connect(redis_server.url), KEYS).attach("registered", rtsp_server.url("cam"))
    first = RunningGate(redis_server.url, [])
    read_stream(redis_client, KEYS.events, lambda e: len(e) >= 1)
    first.close()
    seen = len(read_stream(redis_client, KEYS.events, lambda e: True))
    second = RunningGate(redis_server.url, [])
    try:
        entries = read_stream(redis_client, KEYS.events, lambda e: len(e) > seen and any(
            ev.type == "new" for ev in events_of(e[seen:])))
    finally:
        second.close()
    assert {ev.camera for ev in events_of(entries[seen:])} == {"registered"}


def _faststart_copy(source, target):
    """The same packets with the index (moov) first, as streaming-friendly files have it."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w", options={"movflags": "faststart"}) as dst:
        out_stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out_stream
                dst.mux(packet)
    return target


def test_a_broken_camera_is_reported_while_others_keep_working(redis_server, redis_client, rtsp_server,
                                                              looped_video, tmp_path):
    from tests.support.servers import free_port

    (tmp_path / "notes.mp4").write_text("this is not a video")
    data = looped_video.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])  # index (moov) at the end: lost
    streamable = _faststart_copy(looped_video, tmp_path / "streamable.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(streamable[: len(streamable) // 16])  # index first: plays, then stops
    (tmp_path / "unsupported.mp4").write_bytes(data.replace(b"avc1", b"zzzz"))  # a codec nobody decodes
    gate = RunningGate(redis_server.url, [
        CameraConfig(name="good", url=rtsp_server.url("cam")),
        CameraConfig(name="wrongpath", url=rtsp_server.url("nothing-here")),
        CameraConfig(name="down", url=f"rtsp://user:s3cret@127.0.0.1:{free_port()}/cam"),
        CameraConfig(name="notvideo", url=str(tmp_path / "notes.mp4")),
        CameraConfig(name="truncated", url=str(tmp_path / "truncated.mp4")),
        CameraConfig(name="cut", url=str(tmp_path / "cut.mp4")),
        CameraConfig(name="unsupported", url=str(tmp_path / "unsupported.mp4")),
    ])
    try:
        status = statuses(read_stream(redis_client, KEYS.status, lambda e: {
            s["name"] for s in statuses(e) if s["state"] in ("offline", "ended")} >= {
            "wrongpath", "down", "notvideo", "truncated", "cut", "unsupported"}))
        read_stream(redis_client, KEYS.events, lambda e: any(ev.camera == "good" for ev in events_of(e)))
    finally:
        gate.close()
    reasons = {s["name"]: s["reason"] for s in status if s["state"] in ("offline", "ended")}
    assert "cannot open" in reasons["down"] and "cannot open" in reasons["wrongpath"]
    assert "cannot open" in reasons["notvideo"]
    assert "unsupported codec" in reasons["unsupported"]
    assert "InvalidDataError" in reasons["truncated"] and "invalid data" in reasons["truncated"].lower()
    assert re.fullmatch(r"file truncated: its video ends at \d+\.\d s of 48\.0 s", reasons["cut"])
    everything = json.dumps(statuses(read_stream(redis_client, KEYS.status, lambda e: True)))
    assert "s3cret" not in everything


def test_gate_cameras_lists_state_without_credentials(redis_server, redis_client, rtsp_server):
    attach = subprocess.run([sys.executable, "-m", "gate.cli", "attach", "cam", rtsp_server.url("cam").replace(
        "rtsp://", "rtsp://admin:hunter2@"), "--redis", redis_server.url], capture_output=True, text=True)
    assert attach.returncode == 0 and "hunter2" not in attach.stdout + attach.stderr
    listing = subprocess.run([sys.executable, "-m", "gate.cli", "cameras", "--json", "--redis", redis_server.url],
                             capture_output=True, text=True)
    rows = json.loads(listing.stdout)
    assert rows[0]["name"] == "cam" and "***@" in rows[0]["url"] and "hunter2" not in listing.stdout


def test_events_subscriber_uses_a_consumer_group(redis_server, redis_client, tmp_path):
    from gate.client import EventSubscriber

    event = Event("new", "abc123", "cam", 1, 1, 1.0, 1.0, None, [1, 2, 30, 40], [[1, 2]] * 5, 0.9, 80.0, "m@1",
                  640, 360, cv2.imencode(".jpg", np.zeros((112, 112, 3), np.uint8))[1].tobytes(), b"")
    for seq in (1, 2, 3):
        event.seq = seq
        redis_client.xadd(KEYS.events, event.to_fields())
    crashed = EventSubscriber(redis_server.url, group="g", consumer="crashed")
    assert len(crashed.read(count=2, block_ms=100)) == 2  # read, never acked
    survivor = EventSubscriber(redis_server.url, group="g", consumer="survivor")
    (own_id, _), = survivor.read(count=10, block_ms=100)
    survivor.ack(own_id)
    claimed = survivor.claim_stale(min_idle_ms=0)
    assert len(claimed) == 2 and all(e.event_id == "abc123" for _, e in claimed)
    assert survivor.ack(*[entry_id for entry_id, _ in claimed]) == 2
    result = subprocess.run([sys.executable, "-m", "gate.cli", "events", "--redis", redis_server.url, "--count", "3",
                             "--timeout", "20", "--save", str(tmp_path / "faces")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.count("abc123"[:6]) == 3
    assert len(list((tmp_path / "faces").glob("*.jpg"))) == 3  # one file per (event_id, seq): idempotent


def test_gate_demo_runs_to_completion(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gate.cli", "demo", "--out", str(tmp_path / "faces")],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "summary:" in result.stdout and " new " in result.stdout and " end " in result.stdout
    assert len(list((tmp_path / "faces").glob("*.jpg"))) >= 3


def test_metrics_endpoint_and_health(redis_server, redis_client, rtsp_server):
    import urllib.error
    import urllib.request

    from tests.support.servers import free_port

    port = free_port()
    gate = RunningGate(redis_server.url, [CameraConfig(name="cam", url=rtsp_server.url("cam"))], metrics_port=port)
    try:
        read_stream(redis_client, KEYS.events, lambda e: len(e) >= 1)

        def scrape() -> str:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

        # The bus counts an entry once Redis has acknowledged it, a moment after readers can see it.
        wait_for(lambda: re.search(r"^facegate_events_published_total [1-9]", scrape(), re.M), 30,
                 "the published event to be counted")
        text = scrape()
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())
    finally:
        gate.close()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['facegate_frames_decoded_total{camera="cam"}'] > 10
    assert values['facegate_frames_detected_total{camera="cam"}'] >= 2
    assert values["facegate_faces_scored_total"] >= 1 and values["facegate_events_published_total"] >= 1
    assert values['facegate_camera_up{camera="cam"}'] == 1.0
    assert values['facegate_camera_state{camera="cam",state="online"}'] == 1.0
    decoded, detected, skipped = (values[f'facegate_frames_{k}_total{{camera="cam"}}']
                                  for k in ("decoded", "detected", "skipped"))
    # Detection runs at 5 frames per second of a 25–30 fps video; the rest are counted as skipped
    # (read one after another while the camera runs, so only bounds hold exactly).
    assert detected < skipped <= decoded
    assert values["facegate_frame_to_event_seconds_count"] >= 1
    assert values['facegate_detection_seconds_count{camera="cam"}'] >= 2
    assert health["ok"] is True and health["cameras"] == 1
