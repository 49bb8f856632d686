"""Prometheus metrics and health checks for one gate (``metrics_port`` in the config).

Counters kept by the gate's objects are read at scrape time by a collector (no locking
in the frame path); latencies are histograms observed where they happen. ``/healthz``
answers 503, with its reasons, when any camera that should run produced no frame for
``health_stale_s`` (each camera is reported on its own), a camera thread ended with an error
or did not stop, a thread of the pipeline (scorer, bus, lease keeper, supervisor) is not
running, or Redis has been unreachable longer than ``health_stale_s``: is the gate doing its
whole job (alerts, readiness). ``/livez`` answers 503 only when the process itself is broken,
so that restarting it helps: a pipeline thread is not running, or the supervisor is stuck
(no round for longer than a round can take). A broken camera or an unreachable Redis does not
count: a restart would not mend them, and would interrupt the other cameras.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from gate.runner import Gate

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GateMetrics:
    """Histograms the gate observes, plus the registry the HTTP endpoint serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.detection_seconds = Histogram("facegate_detection_seconds", "Face detection time per frame",
                                           ["camera"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.scoring_seconds = Histogram("facegate_scoring_seconds", "Quality scoring time per batch",
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.frame_to_score_seconds = Histogram("facegate_frame_to_score_seconds",
                                                "From a face's frame time to its quality score (detection, queue "
                                                "and scoring: the pipeline's own delay, without the best-shot "
                                                "policy's waits)", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.frame_to_event_seconds = Histogram("facegate_frame_to_event_seconds",
                                                "From the best frame's time to its XADD", buckets=LATENCY_BUCKETS,
                                                registry=self.registry)
        self.collecting = False  # the gate's counters are registered on the first scrape
        self.lock = threading.Lock()


class _GateCollector:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def collect(self):
        gate = self.gate
        per_camera = {
            "facegate_frames_decoded": ("Frames decoded", lambda w: w.frames),
            "facegate_frames_detected": ("Frames that went through detection", lambda w: w.detections),
            "facegate_frames_skipped": ("Frames decoded but not detected (between detections at the camera's "
                                        "detection rate)", lambda w: max(0, w.frames - w.detections)),
            "facegate_frames_motion_skipped": ("Frames at the detection rate not detected: nothing moved and no "
                                               "track alive (detection.motion)", lambda w: w.motion_skipped),
            "facegate_faces_submitted": ("Faces queued for scoring", lambda w: w.submitted),
            "facegate_reconnects": ("Source reconnect attempts", lambda w: w.source.reconnects if w.source else 0),
            "facegate_tracks_below_min_quality": ("Tracks that ended without reaching bestshot.min_quality (only "
                                                  "a marked end published)", lambda w: w.shot.below_min_quality),
        }
        workers = dict(gate.workers)
        for name, (doc, read) in per_camera.items():
            family = CounterMetricFamily(name, doc, labels=["camera"])
            for camera, worker in workers.items():
                family.add_metric([camera], read(worker))
            yield family
        up = GaugeMetricFamily("facegate_camera_up", "1 when the camera is online", labels=["camera"])
        for camera, worker in workers.items():
            up.add_metric([camera], 1.0 if worker.state == "online" else 0.0)
        yield up
        state = GaugeMetricFamily("facegate_camera_state", "1 for the camera's current state (starting, online, "
                                  "offline, error, ended)", labels=["camera", "state"])
        for camera, worker in workers.items():
            state.add_metric([camera, worker.state], 1.0)
        yield state
        fenced = CounterMetricFamily("facegate_camera_fenced", "Crops and events withheld because the camera's "
                                     "lease deadline had passed", labels=["camera"])
        for camera, worker in workers.items():
            fenced.add_metric([camera], worker.fenced)
        yield fenced
        yield CounterMetricFamily("facegate_faces_scored", "Faces scored", value=gate.scoring.scored)
        yield CounterMetricFamily("facegate_scoring_callback_errors", "Scores or track ends that could not be "
                                  "handed on (logged; the scorer goes on)", value=gate.scoring.callback_errors)
        yield CounterMetricFamily("facegate_scoring_dropped", "Crops dropped under overload",
                                  value=gate.scoring.dropped)
        yield GaugeMetricFamily("facegate_scoring_queue_depth", "Crops waiting to be scored",
                                value=gate.scoring.depth())
        yield CounterMetricFamily("facegate_events_published", "Events written to Redis",
                                  value=gate.bus.stats.published_events)
        yield CounterMetricFamily("facegate_bus_dropped", "Entries dropped from a full buffer",
                                  value=gate.bus.stats.dropped)
        yield GaugeMetricFamily("facegate_bus_buffered", "Entries waiting for Redis", value=gate.bus.pending())
        yield GaugeMetricFamily("facegate_bus_buffered_bytes", "Bytes of the entries waiting in memory",
                                value=gate.bus.buffered_bytes)
        yield CounterMetricFamily("facegate_bus_spill_errors", "Spill writes the disk refused (entries dropped)",
                                  value=gate.bus.stats.spill_errors)
        yield GaugeMetricFamily("facegate_bus_spilled", "Entries waiting in the spill file",
                                value=gate.bus.stats.spilled)
        yield GaugeMetricFamily("facegate_redis_up", "1 when the last write reached Redis",
                                value=1.0 if gate.bus.stats.connected else 0.0)


def _camera_health(name: str, worker, now: float, stale_after_s: float) -> tuple[bool, dict, str | None]:
    last = worker.last_frame_mono
    age = now - (last if last is not None else worker.started)
    info = {"state": worker.state, "seconds_since_last_frame": None if last is None else round(age, 1)}
    if not worker.alive:
        ok = worker.state == "ended"  # a file source that played to its end is done, not broken
        reason = None if ok else f"camera {name}: thread ended ({worker.state}: {worker.last_error})"
    else:
        ok = age <= stale_after_s
        reason = None if ok else (f"camera {name}: no frame for {age:.0f} s ({worker.state}"
                                  f"{': ' + worker.last_error if worker.last_error else ''})")
    return ok, {**info, "ok": ok}, reason


def _pipeline_threads(gate: Gate) -> dict[str, bool]:
    threads = {"supervisor": gate.supervisor is not None and gate.supervisor.is_alive(),
               "scorer": gate.scoring.alive, "bus": gate.bus.alive}
    if gate.leases is not None:
        threads["lease_keeper"] = gate.leases.alive
    return threads


def liveness(gate: Gate, round_limit_s: float | None = None) -> tuple[bool, dict]:
    """Whether the process works at all (a liveness probe): its threads run and its supervisor goes round."""
    round_limit_s = gate.round_limit_s() if round_limit_s is None else round_limit_s
    threads = _pipeline_threads(gate)
    reasons = [f"the {name} thread is not running" for name, alive in threads.items() if not alive]
    since_round = None if gate.last_round is None else time.monotonic() - gate.last_round
    if since_round is not None and since_round > round_limit_s and threads["supervisor"]:
        reasons.append(f"the supervisor is stuck: no round for {since_round:.0f} s (a round takes at most "
                       f"{round_limit_s:.0f} s)")
    if gate.failure:
        reasons.append(gate.failure)
    ok = not reasons
    return ok, {"ok": ok, "reasons": reasons, "threads": threads,
                "seconds_since_supervisor_round": None if since_round is None else round(since_round, 1)}


def health(gate: Gate, stale_after_s: float | None = None) -> tuple[bool, dict]:
    """Whether the gate does its job, and why not: per camera, per thread, Redis."""
    stale_after_s = gate.config.health_stale_s if stale_after_s is None else stale_after_s
    now = time.monotonic()
    reasons: list[str] = []
    per_camera: dict[str, dict] = {}
    for name, worker in dict(gate.workers).items():
        _, per_camera[name], reason = _camera_health(name, worker, now, stale_after_s)
        reasons += [reason] if reason else []
    for name, worker in dict(gate.stuck).items():
        if worker.alive:
            per_camera[name] = {"state": "abandoned", "ok": False, "seconds_since_last_frame": None}
            reasons.append(f"camera {name}: its thread did not stop (abandoned)")
    threads = _pipeline_threads(gate)
    reasons += [f"the {name} thread is not running" for name, alive in threads.items() if not alive]
    if gate.failure:
        reasons.append(gate.failure)
    stats = gate.bus.stats
    redis_down_for = time.time() - stats.disconnected_since if stats.disconnected_since else 0.0
    if redis_down_for > stale_after_s:
        reasons.append(f"redis unreachable for {redis_down_for:.0f} s")
    ages = [c["seconds_since_last_frame"] for c in per_camera.values() if c["seconds_since_last_frame"] is not None]
    ok = not reasons
    return ok, {"ok": ok, "reasons": reasons, "cameras": len(gate.workers), "per_camera": per_camera,
                "threads": threads, "seconds_since_last_frame": min(ages, default=None),
                "redis_down_s": round(redis_down_for, 1)}


def render_metrics(gate: Gate) -> bytes:
    """The Prometheus text for this gate (whichever server serves it: this one or the console)."""
    with gate.metrics.lock:
        if not gate.metrics.collecting:
            gate.metrics.registry.register(_GateCollector(gate))
            gate.metrics.collecting = True
    return generate_latest(gate.metrics.registry)


def serve(gate: Gate, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``/metrics``, ``/healthz`` and ``/livez`` on a daemon thread; returns the server (``.server_port``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, status, kind = render_metrics(gate), 200, "text/plain; version=0.0.4"
            elif self.path.startswith(("/healthz", "/livez")):
                ok, info = health(gate) if self.path.startswith("/healthz") else liveness(gate)
                body, status, kind = json.dumps(info).encode(), 200 if ok else 503, "application/json"
            else:
                body, status, kind = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
