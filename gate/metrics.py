"""Prometheus metrics and a health check for one gate (``metrics_port`` in the config).

Counters kept by the gate's objects are read at scrape time by a collector (no locking
in the frame path); latencies are histograms observed where they happen. ``/healthz``
answers 503 when no camera produced a frame for ``stale_after_s`` or Redis has been
unreachable longer than that.
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
        yield CounterMetricFamily("facegate_faces_scored", "Faces scored", value=gate.scoring.scored)
        yield CounterMetricFamily("facegate_scoring_dropped", "Crops dropped under overload",
                                  value=gate.scoring.dropped)
        yield GaugeMetricFamily("facegate_scoring_queue_depth", "Crops waiting to be scored",
                                value=gate.scoring.depth())
        yield CounterMetricFamily("facegate_events_published", "Events written to Redis",
                                  value=gate.bus.stats.published_events)
        yield CounterMetricFamily("facegate_bus_dropped", "Entries dropped from a full buffer",
                                  value=gate.bus.stats.dropped)
        yield GaugeMetricFamily("facegate_bus_buffered", "Entries waiting for Redis", value=gate.bus.pending())
        yield GaugeMetricFamily("facegate_bus_spilled", "Entries waiting in the spill file",
                                value=gate.bus.stats.spilled)
        yield GaugeMetricFamily("facegate_redis_up", "1 when the last write reached Redis",
                                value=1.0 if gate.bus.stats.connected else 0.0)


def health(gate: Gate, stale_after_s: float = 30.0) -> tuple[bool, dict]:
    now = time.time()
    last_frame = max((w.last_frame_ts for w in gate.workers.values()), default=None)
    redis_down_for = now - gate.bus.stats.disconnected_since if gate.bus.stats.disconnected_since else 0.0
    frames_ok = not gate.workers or (last_frame is not None and now - last_frame <= stale_after_s)
    ok = frames_ok and redis_down_for <= stale_after_s
    return ok, {"ok": ok, "cameras": len(gate.workers), "seconds_since_last_frame":
                None if last_frame is None else round(now - last_frame, 1), "redis_down_s": round(redis_down_for, 1)}


def serve(gate: Gate, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on a daemon thread; returns the server (``.server_port``)."""
    gate.metrics.registry.register(_GateCollector(gate))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, status, kind = generate_latest(gate.metrics.registry), 200, "text/plain; version=0.0.4"
            elif self.path.startswith("/healthz"):
                ok, info = health(gate)
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
