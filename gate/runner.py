"""The gate process: one supervisor loop owns every camera's lifecycle.

Cameras come from the config and the Redis registry; the loop wakes on control entries
(``gate attach``/``detach``) or every second, starts what is new and stops what is gone,
so attach/detach never race a start. Per-camera state is written to ``<prefix>camera_state``
for ``gate cameras``. With scale-out, leases are renewed by their own thread
(:mod:`gate.leases`), never by this loop.

Stopping cameras: all of them are asked to stop first, then joined together, each for at
most ``source.stop_timeout_s``. A camera whose thread did not stop is *abandoned*: its open
tracks are ended from here, it stays silent, its lease is left to expire (never released
while it runs) and it is not started again in this process while that thread lives. A lease
is released only after the camera stopped and its last events were written, so the next
owner's events follow ours. Shutdown in that order: cameras, scorer (every ``end`` handed
on), leases, bus (written, or kept in the spill folder for the next process). A thread of
the pipeline that dies makes the gate unhealthy and ``run`` return 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import redis

from engines.detector import Detector
from engines.embedding_norm import EmbeddingNormScorer
from engines.paths import cache_root
from engines.quality import QualityScorer
from gate.bus import REDIS_TIMEOUT_S, Bus, connect
from gate.camera import CameraWorker
from gate.config import CameraConfig, ConfigError, GateConfig, QualityConfig
from gate.leases import Lease, LeaseManager, new_worker_id
from gate.metrics import GateMetrics, serve
from gate.redact import redact_text
from gate.registry import CameraRegistry, describe
from gate.schema import Keys
from gate.scoring import ScoringQueue

log = logging.getLogger(__name__)
RELEASE_WAIT_S = 5.0  # how long a released camera's last events may take to be written first


def default_spill_dir(redis_url: str, prefix: str) -> Path:
    """One spill folder per deployment (Redis address and key prefix): what a gate leaves there is
    replayed into the same Redis by the next gate, never into another deployment's."""
    parts = urlsplit(redis_url)
    where = f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}|{prefix}"
    return cache_root() / "spool" / hashlib.sha256(where.encode()).hexdigest()[:16]


def quality_scorer(quality: QualityConfig) -> QualityScorer | EmbeddingNormScorer:
    """The scorer ``quality.method`` names: the SDD-FIQA model, or SFace's embedding norm (same interface)."""
    threads = quality.threads or None
    if quality.method == "embedding-norm":
        return EmbeddingNormScorer(batch_size=quality.batch_size, threads=threads)
    return QualityScorer(quality.model, quality.backend, quality.batch_size, threads=threads)


class Gate:
    """Everything one ``gate run`` holds."""

    def __init__(self, config: GateConfig, redis_url: str) -> None:
        self.config = config
        self.keys = Keys(config.redis.prefix)
        self.client = connect(redis_url, config.redis.ssl_ca_certs, config.redis.ssl_certfile,
                              config.redis.ssl_keyfile)
        self.worker_id = new_worker_id()
        spill_dir = Path(config.redis.spill_dir) if config.redis.spill_dir else default_spill_dir(
            redis_url, config.redis.prefix)
        self.bus = Bus(self.client, self.keys, config.redis.events_maxlen, config.redis.buffer_size, spill_dir,
                       config.redis.spill_max_bytes, self.worker_id, config.redis.buffer_max_bytes)
        self._reported_drops = 0
        self.registry = CameraRegistry(self.client, self.keys)
        self.detector = Detector(score_threshold=min(config.detection.score_threshold, 0.5),
                                 max_side=config.detection.max_side, threads=config.detection.threads or None)
        self.scorer = quality_scorer(config.quality)
        self.metrics = GateMetrics()
        self.scoring = ScoringQueue(self._timed_score, config.quality.queue_size, config.quality.batch_size,
                                    [self._observe_latency])
        self.bus.on_event_written = self.metrics.frame_to_event_seconds.observe
        self.workers: dict[str, CameraWorker] = {}
        self.stuck: dict[str, CameraWorker] = {}  # abandoned: their threads did not stop
        self._specs: dict[str, CameraConfig] = {}
        self._track_ids: dict[str, Iterator[int]] = {}  # per camera, across its restarts in this process
        self.leases = LeaseManager(self.client, self.keys, self.worker_id, config.scaleout.lease_s) \
            if config.scaleout.enabled else None
        self.failure: str | None = None
        self.supervisor: threading.Thread | None = None
        self.last_round: float | None = None  # time.monotonic() when the supervisor last began a round
        try:
            self.metrics_server = serve(self, config.metrics_port, config.metrics_host) \
                if config.metrics_port is not None else None
        except OSError as exc:  # e.g. the port is in use: a configuration error, not a crash to restart
            self.scoring.close()
            self.bus.close(0.1)
            raise ConfigError(f"metrics_port {config.metrics_port} on {config.metrics_host}: "
                              f"{exc.strerror or exc}") from None
        self.console = None  # the HTTP API and page (gate.console), when http.port is set
        if config.http.port is not None:
            from gate.console.server import start_console

            self.console = start_console(self, config.http)

    def _observe_latency(self, job, quality: float) -> None:
        self.metrics.frame_to_score_seconds.observe(time.time() - job.sample.ts)

    def _timed_score(self, crops):
        with self.metrics.scoring_seconds.time():
            return self.scorer.score(crops)

    @property
    def model_tag(self) -> str:
        """What events carry in ``model``: the quality model's ``name@version`` or the method's tag."""
        return self.scorer.tag

    # -- which cameras run -------------------------------------------------------------
    def _desired(self) -> dict[str, CameraConfig] | None:
        cameras = {c.name: c for c in self.config.cameras}
        try:
            cameras.update(self.registry.cameras())
        except redis.RedisError as exc:
            log.warning("camera registry unreachable (%s); keeping current cameras", redact_text(exc))
            return None
        return cameras

    def _apply(self, desired: dict[str, CameraConfig]) -> None:
        for name, worker in list(self.stuck.items()):
            if not worker.alive:  # it finally stopped: the camera may run again
                log.info("abandoned camera %s's thread has ended", name)
                del self.stuck[name]
        gone = [name for name in self.workers if name not in desired or desired[name] != self._specs[name]]
        self._release(self._stop_cameras(gone, "detached"))
        for name in gone:
            if name not in desired:
                self._forget_state(name)
        if self.leases is not None:
            starting = self._leased(desired)
        else:
            starting = {name: Lease.unfenced(name) for name in desired
                        if name not in self.workers and name not in self.stuck}
        for name, lease in starting.items():
            self._start_camera(name, desired[name], lease)

    def _start_camera(self, name: str, camera: CameraConfig, lease: Lease) -> None:
        log.info("starting camera %s", describe(camera))
        worker = CameraWorker(camera, self.config, self.detector, self.scoring, self.bus, self.model_tag, lease,
                              self._track_ids.setdefault(name, itertools.count(1)))
        worker.detection_seconds = self.metrics.detection_seconds.labels(name)
        self.workers[name], self._specs[name] = worker, camera
        worker.start()

    def _leased(self, desired: dict[str, CameraConfig]) -> dict[str, Lease]:
        """Stop cameras whose lease was lost, give back surplus, take free ones: the leases to start."""
        leases = self.leases
        assert leases is not None
        lost = [name for name in self.workers if name not in leases.held or leases.held[name].lost]
        for name in lost:
            leases.forget(name)
        self._stop_cameras(lost, f"lease lost (worker {self.worker_id})")
        share = leases.share(len(desired))
        surplus = sorted(self.workers, reverse=True)[: max(0, len(self.workers) - share)]
        self._release(self._stop_cameras(surplus, f"rebalanced away from worker {self.worker_id}"))
        owned = set(self.workers)
        starting: dict[str, Lease] = {}
        for name in sorted(desired):
            if len(owned) >= share:
                break
            if name in owned or name in self.stuck:
                continue
            lease = leases.acquire(name)
            if lease is not None:
                self.bus.publish_status("camera", name, "acquired", f"worker {self.worker_id}, epoch {lease.epoch}")
                owned.add(name)
                starting[name] = lease
        return starting

    # -- stopping cameras --------------------------------------------------------------
    def _stop_cameras(self, names: list[str], reason: str) -> list[str]:
        """Ask all to stop, then join them together; abandon those that do not stop. Returns the stopped."""
        if not names:
            return []
        workers = {name: self.workers.pop(name) for name in names}
        for name in names:
            self._specs.pop(name, None)
        for worker in workers.values():
            worker.request_stop()
        timeout = self.config.source.stop_timeout_s
        deadline = time.monotonic() + timeout
        stopped = []
        for name, worker in workers.items():
            if worker.join(max(0.0, deadline - time.monotonic())):
                stopped.append(name)
                self.bus.publish_status("camera", name, "stopped", reason)
                continue
            worker.abandon()
            self.stuck[name] = worker
            if self.leases is not None:
                self.leases.forget(name)
            log.error("camera %s did not stop within %.0f s: abandoned (its tracks ended, its lease left to "
                      "expire, not restarted while its thread lives)", name, timeout)
            self.bus.publish_status("camera", name, "stopped", f"{reason}; its thread did not stop within "
                                    f"{timeout:.0f} s: abandoned")
        return stopped

    def _release(self, stopped: list[str]) -> None:
        """Give back the leases of stopped cameras once their last events are written."""
        if self.leases is None or not stopped:
            return
        if not (self.scoring.barrier(RELEASE_WAIT_S) and self.bus.flush(RELEASE_WAIT_S)):
            log.warning("last events of %s not written yet; their leases are left to expire", ", ".join(stopped))
            for name in stopped:
                self.leases.forget(name)
            return
        for name in stopped:
            self.leases.release(name)

    def _forget_state(self, name: str) -> None:
        """A detached camera leaves the state hash too (lists show it gone at once, not stale)."""
        with contextlib.suppress(redis.RedisError):  # advisory, as the states are
            self.client.hdel(self.keys.camera_state, name)

    # -- the loop ----------------------------------------------------------------------
    def round_limit_s(self) -> float:
        """The longest a supervisor round takes while it works: three camera stops (detached, lost
        and surplus cameras), two lease hand-overs' waits, and for each of its six Redis calls a
        timeout on the call and one on the reconnect. Past it the supervisor is stuck (``/livez``)."""
        return 3 * self.config.source.stop_timeout_s + 4 * RELEASE_WAIT_S + 12 * REDIS_TIMEOUT_S

    def thread_failure(self) -> str | None:
        """Why the pipeline cannot go on (a thread of it died), or None."""
        if not self.scoring.alive:
            return f"the scoring thread stopped ({self.scoring.failure or 'closed'})"
        if not self.bus.alive:
            return f"the bus thread stopped ({self.bus.failure or 'closed'})"
        if self.leases is not None and self.supervisor is not None and not self.leases.alive:
            return "the lease keeper thread stopped"
        return None

    def _report_overflow(self) -> None:
        dropped = self.bus.stats.dropped
        if dropped > self._reported_drops:
            self.bus.publish_status("worker", self.worker_id, "overflow",
                                    f"{dropped} entries dropped: event buffer and spill file were full")
            self._reported_drops = dropped

    def _publish_state(self) -> None:
        if not self.workers:
            return
        try:
            seconds, micros = self.client.time()  # Redis's clock: `gate cameras` compares with it
            now = seconds + micros / 1e6
            states = {name: json.dumps({"state": w.state, "fps": round(w.fps, 1), "last_error": w.last_error,
                                        "decoder": w.decoder, "frames": w.frames, "worker": self.worker_id,
                                        "ts": round(now, 3)})
                      for name, w in self.workers.items()}
            self.client.hset(self.keys.camera_state, mapping=states)
        except redis.RedisError:
            pass  # state is advisory; events and status are buffered by the bus

    def _supervise(self) -> None:
        """One round: apply the wanted cameras, watch for stalls, publish state."""
        desired = self._desired()
        try:
            if desired is not None:
                self._apply(desired)
        except redis.RedisError as exc:
            log.warning("redis error while managing cameras: %s", redact_text(exc))
        for worker in list(self.workers.values()):
            worker.watch()
        self._publish_state()
        self._report_overflow()

    def run(self, stop: threading.Event) -> int:
        """Supervise until ``stop`` is set (0) or a pipeline thread died (1); then shut down."""
        self.supervisor = threading.current_thread()
        if self.leases is not None:
            self.leases.start()
        self.bus.publish_status("worker", self.worker_id, "started", f"model {self.model_tag}")
        try:
            last_control = self.registry.latest_control_id()
        except redis.RedisError:
            last_control = "$"
        while not stop.is_set():
            self.last_round = time.monotonic()
            self.failure = self.thread_failure()
            if self.failure:
                log.error("%s: the gate stops (exit code 1) so that its supervisor restarts it", self.failure)
                self.bus.publish_status("worker", self.worker_id, "failed", self.failure)
                break
            try:
                self._supervise()
            except Exception:  # never quietly, never for good: log it and try again next round
                log.exception("supervisor round failed")
            try:
                last_control = self.registry.wait_for_change(last_control, block_ms=1000)
            except redis.RedisError:
                stop.wait(1.0)
        self.shutdown()
        return 1 if self.failure else 0

    def shutdown(self, flush_timeout_s: float = 5.0) -> bool:
        """Stop cameras (ending their tracks), drain the scorer, release leases, flush events."""
        stopped = self._stop_cameras(list(self.workers), "gate stopping")
        self.scoring.close()  # every end queued above is handed on before the bus closes
        if self.leases is not None:
            if self.bus.flush(flush_timeout_s):  # our last events first, then the next owner's
                for name in stopped:
                    self.leases.release(name)
            self.leases.stop()
            self.leases.leave()
        self.bus.publish_status("worker", self.worker_id, "stopped", self.failure or "")
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()  # the port is free again when run() returns
        if self.console is not None:
            self.console.stop()
        return self.bus.close(flush_timeout_s)
