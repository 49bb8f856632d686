"""The gate process: one supervisor loop owns every camera's lifecycle.

Cameras come from the config and the Redis registry; the loop wakes on control entries
(``gate attach``/``detach``) or every second, starts what is new and stops what is gone,
so attach/detach never race a start. Per-camera state is written to ``<prefix>camera_state``
for ``gate cameras``. Stopping ends every open track (their ``end`` events), flushes the
scorer and the event buffer, and reports on the status stream.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import redis

from engines.detector import Detector
from engines.paths import cache_root
from engines.quality import QualityScorer
from gate.bus import Bus, connect
from gate.camera import CameraWorker
from gate.config import CameraConfig, GateConfig
from gate.leases import LeaseManager
from gate.metrics import GateMetrics, serve
from gate.redact import redact_text
from gate.registry import CameraRegistry, describe
from gate.schema import Keys
from gate.scoring import ScoringQueue

log = logging.getLogger(__name__)


class Gate:
    """Everything one ``gate run`` holds."""

    def __init__(self, config: GateConfig, redis_url: str) -> None:
        self.config = config
        self.keys = Keys(config.redis.prefix)
        self.client = connect(redis_url, config.redis.ssl_ca_certs, config.redis.ssl_certfile,
                              config.redis.ssl_keyfile)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        spill_dir = Path(config.redis.spill_dir) if config.redis.spill_dir else cache_root() / "spool"
        self.bus = Bus(self.client, self.keys, config.redis.events_maxlen, config.redis.buffer_size, spill_dir,
                       config.redis.spill_max_bytes, self.worker_id)
        self._reported_drops = 0
        self.registry = CameraRegistry(self.client, self.keys)
        self.detector = Detector(score_threshold=min(config.detection.score_threshold, 0.5),
                                 max_side=config.detection.max_side, threads=config.detection.threads or None)
        self.scorer = QualityScorer(config.quality.model, config.quality.backend, config.quality.batch_size,
                                    threads=config.quality.threads or None)
        self.metrics = GateMetrics()
        self.scoring = ScoringQueue(self._timed_score, config.quality.queue_size, config.quality.batch_size,
                                    [self._observe_latency])
        self.bus.on_event_written = self.metrics.frame_to_event_seconds.observe
        self.metrics_server = serve(self, config.metrics_port, config.metrics_host) \
            if config.metrics_port is not None else None
        self.workers: dict[str, CameraWorker] = {}
        self._specs: dict[str, CameraConfig] = {}
        self.leases = LeaseManager(self.client, self.keys, self.worker_id, config.scaleout.lease_s) \
            if config.scaleout.enabled else None

    def _observe_latency(self, job, quality: float) -> None:
        self.metrics.frame_to_score_seconds.observe(time.time() - job.sample.ts)

    def _timed_score(self, crops):
        with self.metrics.scoring_seconds.time():
            return self.scorer.score(crops)

    @property
    def model_tag(self) -> str:
        return self.scorer.manifest.tag

    def _desired(self) -> dict[str, CameraConfig] | None:
        cameras = {c.name: c for c in self.config.cameras}
        try:
            cameras.update(self.registry.cameras())
        except redis.RedisError as exc:
            log.warning("camera registry unreachable (%s); keeping current cameras", redact_text(exc))
            return None
        return cameras

    def _apply(self, desired: dict[str, CameraConfig]) -> None:
        for name in list(self.workers):
            if name not in desired or desired[name] != self._specs[name]:
                self._stop_camera(name, "detached")
        if self.leases is not None:
            desired = self._leased(desired)
        for name, camera in desired.items():
            if name not in self.workers:
                self._start_camera(name, camera)

    def _start_camera(self, name: str, camera: CameraConfig) -> None:
        log.info("starting camera %s", describe(camera))
        worker = CameraWorker(camera, self.config, self.detector, self.scoring, self.bus, self.model_tag)
        worker.detection_seconds = self.metrics.detection_seconds.labels(name)
        self.workers[name], self._specs[name] = worker, camera
        worker.start()

    def _leased(self, desired: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        """The cameras this worker may run now: renew, give back surplus, take free ones."""
        leases = self.leases
        assert leases is not None
        kept = leases.renew(sorted(self.workers))
        for name in sorted(set(self.workers) - kept):
            self._stop_camera(name, f"lease lost (worker {self.worker_id})", release=False)
        share = leases.share(len(desired), leases.heartbeat())
        for name in sorted(self.workers, reverse=True)[: max(0, len(self.workers) - share)]:
            self._stop_camera(name, f"rebalanced away from worker {self.worker_id}")
        owned = set(self.workers)
        for name in sorted(desired):
            if len(owned) >= share:
                break
            if name not in owned and leases.acquire(name):
                self.bus.publish_status("camera", name, "acquired", f"worker {self.worker_id}")
                owned.add(name)
        return {name: desired[name] for name in owned if name in desired}

    def _stop_camera(self, name: str, reason: str, release: bool = True) -> None:
        worker = self.workers.pop(name)
        self._specs.pop(name, None)
        worker.request_stop()
        worker.join(15)
        self.bus.publish_status("camera", name, "stopped", reason)
        if self.leases is not None and release:
            self.leases.release(name)

    def _report_overflow(self) -> None:
        dropped = self.bus.stats.dropped
        if dropped > self._reported_drops:
            self.bus.publish_status("worker", self.worker_id, "overflow",
                                    f"{dropped} entries dropped: event buffer and spill file were full")
            self._reported_drops = dropped

    def _publish_state(self) -> None:
        states = {name: json.dumps({"state": w.state, "fps": round(w.fps, 1), "last_error": w.last_error,
                                    "frames": w.frames, "worker": self.worker_id, "ts": round(time.time(), 3)})
                  for name, w in self.workers.items()}
        try:
            if states:
                self.client.hset(self.keys.camera_state, mapping=states)
        except redis.RedisError:
            pass  # state is advisory; events and status are buffered by the bus

    def run(self, stop: threading.Event) -> None:
        self.bus.publish_status("worker", self.worker_id, "started", f"model {self.model_tag}")
        try:
            last_control = self.registry.latest_control_id()
        except redis.RedisError:
            last_control = "$"
        while not stop.is_set():
            desired = self._desired()
            try:
                if desired is not None:
                    self._apply(desired)
            except redis.RedisError as exc:
                log.warning("redis error while managing cameras: %s", redact_text(exc))
            if self.leases is not None and self.leases.must_stop_all():
                for name in list(self.workers):  # fencing: our leases may expire soon
                    self._stop_camera(name, "cannot renew the camera lease", release=False)
            self._publish_state()
            self._report_overflow()
            try:
                last_control = self.registry.wait_for_change(last_control, block_ms=1000)
            except redis.RedisError:
                stop.wait(1.0)
        self.shutdown()

    def shutdown(self, flush_timeout_s: float = 5.0) -> bool:
        """Stop cameras (ending their tracks), drain the scorer, flush events."""
        for worker in self.workers.values():
            worker.request_stop()
        for name, worker in list(self.workers.items()):
            worker.join(15)
            self.bus.publish_status("camera", name, "stopped", "gate stopping")
            if self.leases is not None:
                self.leases.release(name)
        self.workers.clear()
        if self.leases is not None:
            self.leases.leave()
        self.scoring.close()
        self.bus.publish_status("worker", self.worker_id, "stopped", "")
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        return self.bus.close(flush_timeout_s)
