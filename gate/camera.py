"""One camera's thread: decode → detect (at the configured rate) → track → submit crops.

Only faces matched to a track in a detection frame, and passing the best-shot guards,
are aligned and queued for scoring. When the camera goes offline or is stopped, its
open tracks end (their ``end`` events carry the best frame so far).

Fencing: the camera runs under a :class:`~gate.leases.Lease`. Before it submits a crop and
before any of its events is published, the lease's deadline is checked; past it the camera
emits nothing (its tracks' later events and ends are withheld), so it never overlaps the
next owner. A camera the supervisor *abandons* (its thread did not stop in time) has its
open tracks ended by the supervisor and stays silent if its thread ever wakes up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from engines.alignment import align_face
from engines.detector import Detector
from gate.bestshot import BestShot, Sample
from gate.bus import Bus
from gate.config import CameraConfig, GateConfig
from gate.leases import Lease
from gate.motion import MotionGate
from gate.redact import redact_text, redact_url
from gate.schema import Event
from gate.scoring import EndJob, ScoreJob, ScoringQueue
from gate.source import CameraSource, Frame, stall_reason
from gate.tracker import Track, Tracker

log = logging.getLogger(__name__)
WORKING_MAX_SIDE = 1920  # frames are converted to BGR at most this large (faces are aligned from it)
# Frame times are float sums: five 1/25 s frames may add up to a hair under 0.2 s. Without slack a 5 fps
# detection rate on a 25 fps stream detects every 6th frame (4.2/s).
TIME_SLACK_S = 1e-3


class CameraWorker:
    """Runs one camera until stopped; never raises into the gate."""

    def __init__(self, camera: CameraConfig, config: GateConfig, detector: Detector, scoring: ScoringQueue,
                 bus: Bus, model_tag: str, lease: Lease | None = None, track_ids: Iterator[int] | None = None) -> None:
        self.camera = camera
        self.config = config
        self.detector = detector
        self.scoring = scoring
        self.bus = bus
        self.lease = lease or Lease.unfenced(camera.name)
        self.stop = threading.Event()
        self.shot = BestShot(camera.name, config.bestshot, config.tracking.min_hits, model_tag, self._emit,
                             self.lease.epoch)
        self.tracker = Tracker(config.tracking.iou_threshold, config.tracking.max_unseen_s, track_ids=track_ids)
        self.state, self.last_error = "starting", ""
        self.decoder = ""  # what decodes the stream, e.g. "h264 (software)" (gate cameras shows it)
        self.frames = self.detections = self.submitted = 0
        self.fenced = 0  # crops and events withheld because the lease deadline had passed
        self.motion = MotionGate(config.detection.motion) if config.detection.motion.enabled else None
        self.motion_skipped = 0  # frames at the detection rate left undetected: nothing moved, no track alive
        self.fps = 0.0
        self.started = time.monotonic()
        self.last_frame_ts: float | None = None  # wall clock of the last frame
        self.last_frame_mono: float | None = None  # monotonic clock of the last frame
        self._last_frame_clock = 0.0  # the last frame's timestamp (the tracker's clock)
        self.detection_seconds = None  # a prometheus Histogram child, set by the gate
        self.source: CameraSource | None = None
        self._last_scored: dict[int, float] = {}
        self._lock = threading.RLock()  # tracker, per-track state and state changes
        self.abandoned = False
        self._period = 0.2  # seconds between detections (set when the loop starts)
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- fencing -----------------------------------------------------------------------
    def _fence_open(self) -> bool:
        if self.lease.valid():
            return True
        self.fenced += 1
        if self.fenced == 1:
            log.warning("camera %s: lease deadline passed, emitting nothing (epoch %d)", self.camera.name,
                        self.lease.epoch)
        return False

    def _emit(self, event: Event) -> None:
        """Where the best-shot state's events go (on the scoring thread): checked against the lease."""
        if self._fence_open():
            self.bus.publish_event(event)

    # -- state and track ends ----------------------------------------------------------
    def _on_state(self, state: str, reason: str) -> None:
        reason = redact_text(reason)  # last_error goes to the camera_state hash and /healthz
        with self._lock:
            if self.abandoned:
                return
            if state != "online":
                self._finish(self.tracker.end_all())
            if state != self.state or reason != self.last_error:
                self.bus.publish_status("camera", self.camera.name, state, reason)
            self.state = state
            if state == "online":  # the reason names the decoder, not an error
                self.decoder = self.source.decoder if self.source else ""
                # A frame is on its way: without this the watchdog could judge the new connection
                # by the last frame of the old one before that frame is counted.
                self.last_frame_mono = time.monotonic()
            else:
                self.last_error = reason or self.last_error

    def _finish(self, tracks: list[Track]) -> None:
        """Tracks that ended, whichever way: forget their per-track state, queue their end events."""
        for track in tracks:
            self._last_scored.pop(track.track_id, None)
            self.scoring.end_track(EndJob(self.shot, track.track_id, track.last_ts))

    def watch(self) -> None:
        """The supervisor's check, about once a second: an online camera that produced no frame for
        ``source.watchdog_s`` is reported offline and its tracks end, whatever its thread is doing.

        The reader reconnects by itself within that time (``gate/source.py``); this check is what
        still reports the stall when the camera's thread is held up somewhere else (detection,
        a decoder that hangs in its driver). If frames come again, the camera is back online.
        """
        with self._lock:
            if self.abandoned or self.state != "online" or self.last_frame_mono is None:
                return
            idle = time.monotonic() - self.last_frame_mono
            if idle < self.config.source.watchdog_s:
                return
            self._finish(self.tracker.expire(self._last_frame_clock + idle))
            self._on_state("offline", stall_reason(self.config.source.watchdog_s))

    def abandon(self) -> None:
        """The thread did not stop in time: end its open tracks here; it stays silent from now on."""
        if not self._lock.acquire(timeout=5):
            log.error("camera %s: could not end its tracks (its thread holds the tracker)", self.camera.name)
            self.abandoned = True
            return
        try:
            self._finish(self.tracker.end_all())
            self.abandoned = True
        finally:
            self._lock.release()

    # -- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # one broken camera never stops the others
            log.exception("camera %s failed", self.camera.name)
            self._on_state("error", f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                if not self.abandoned:
                    self._finish(self.tracker.end_all())

    def _loop(self) -> None:
        source = CameraSource(self.camera.url, self.config.source, self.stop, self.camera.transport,
                              WORKING_MAX_SIDE, self._on_state)
        self.source = source
        period = self._period = 1.0 / (self.camera.detection_fps or self.config.detection.fps)
        next_detection = 0.0
        window_start, window_frames = time.monotonic(), 0
        for frame in source.frames():
            self.frames += 1
            self.last_frame_ts, self.last_frame_mono = time.time(), time.monotonic()
            self._last_frame_clock = frame.ts
            if self.state != "online":  # back after the watchdog reported a stall
                self._on_state("online", "")
            window_frames += 1
            now = time.monotonic()
            if now - window_start >= 2.0:
                self.fps, window_start, window_frames = window_frames / (now - window_start), now, 0
            if frame.ts < next_detection - TIME_SLACK_S:
                continue
            # Keep to the schedule (the rate holds at any frame rate); restart it after a gap.
            next_detection = next_detection + period if frame.ts < next_detection + period else frame.ts + period
            if self.motion is not None and not self.motion.should_detect(
                    frame.gray_at(self.config.detection.motion.width), frame.ts, bool(self.tracker.tracks)):
                self.motion_skipped += 1
                continue
            self._detect(frame)
        log.info("camera %s stopped (%s)", self.camera.name, redact_url(self.camera.url))

    def _detect(self, frame: Frame) -> None:
        started = time.perf_counter()
        image = frame.image_at(self.detector.max_side or max(frame.work_w, frame.work_h))
        faces = self.detector.detect(image)
        if self.detection_seconds is not None:
            self.detection_seconds.observe(time.perf_counter() - started)
        self.detections += 1
        in_source = faces.scaled(frame.source_w / image.shape[1])
        interval = self.config.bestshot.score_interval_s
        with self._lock:
            if self.abandoned:
                return
            update = self.tracker.update(in_source, frame.ts)
            for track, det in update.matched:
                bbox = in_source.boxes_px[det]
                if not self.shot.eligible(bbox, frame.source_w, frame.source_h):
                    continue
                # Detections are a period apart only on average (e.g. 4 or 5 frames at 24 fps): half a period
                # of slack keeps a track's scores score_interval_s apart on average, not the next detection.
                if frame.ts - self._last_scored.get(track.track_id, float("-inf")) < interval - self._period / 2:
                    continue
                if not self._fence_open():
                    continue
                self._last_scored[track.track_id] = frame.ts
                landmarks = in_source.landmarks_px[det]
                sample = Sample(track.track_id, track.hits, frame.ts, track.first_ts,
                                align_face(frame.image, landmarks / frame.scale),
                                frame.image_at(self.config.bestshot.frame_jpeg_max_side), bbox.copy(),
                                landmarks.copy(), float(faces.scores[det]), frame.source_w, frame.source_h)
                self.scoring.submit(ScoreJob(self.shot, sample),
                                    wait=self.source is not None and self.source.unpaced)
                self.submitted += 1
            self._finish(update.ended)

    def request_stop(self) -> None:
        self.stop.set()

    def join(self, timeout: float = 10.0) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
