"""Best shot per track: keep the highest-quality eligible frame, emit new/update/end.

Policy (DESIGN, after Frigate/DeepStream best-shot systems): only frames where the track
was matched by a detection are scored, and only faces that pass the guards (minimum
size, not touching the frame edge). ``new`` once the track is confirmed (enough hits)
and has a scored frame; ``update`` when the best improved by a margin, at most once per
interval; ``end`` when the track ends, carrying the final best frame. JPEGs are encoded
only when the best frame changes, each under its size cap.

With ``min_quality`` set, a confirmed track is announced (``new``) only once its best
reaches it; a track that never does publishes just its ``end``, marked
``below_min_quality`` (so operators see what was turned away) and counted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from gate.config import BestShotConfig
from gate.schema import Event

JPEG_QUALITIES = (90, 75, 60, 45, 30)


@dataclass
class Sample:
    """One scored face of one frame (what a best frame is made of)."""

    track_id: int
    hits: int
    ts: float
    start_ts: float
    crop: np.ndarray  # aligned 112×112 BGR
    frame_small: np.ndarray  # downscaled full frame, BGR
    bbox: np.ndarray  # source pixels
    landmarks: np.ndarray  # 5×2 source pixels
    det_score: float
    frame_w: int
    frame_h: int


def encode_capped(image: np.ndarray, max_bytes: int) -> bytes:
    """JPEG bytes under ``max_bytes``, lowering quality as needed; empty if impossible."""
    for quality in JPEG_QUALITIES:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(data) <= max_bytes:
            return data.tobytes()
    return b""


@dataclass
class _TrackShot:
    event_id: str
    best: Sample | None = None
    best_quality: float = -1.0
    face_jpeg: bytes = b""
    frame_jpeg: bytes = b""
    encoded: Sample | None = None  # the sample the JPEGs above were made from
    published_quality: float | None = None
    seq: int = 0
    last_publish_ts: float = float("-inf")
    confirmed: bool = False  # enough hits and a scored frame: it would have been announced


class BestShot:
    """Best-shot state of one camera's tracks; calls ``emit`` with each event."""

    def __init__(self, camera: str, config: BestShotConfig, min_hits: int, model_tag: str,
                 emit: Callable[[Event], None], owner_epoch: int = 0) -> None:
        self.camera = camera
        self.owner_epoch = owner_epoch  # fencing token of this camera's ownership, carried by every event
        self.config = config
        self.min_hits = min_hits
        self.model_tag = model_tag
        self.emit = emit
        self.shots: dict[int, _TrackShot] = {}
        self.below_min_quality = 0  # tracks that ended without reaching config.min_quality

    def eligible(self, bbox: np.ndarray, frame_w: int, frame_h: int) -> bool:
        """Guards: big enough and not cut by the frame edge."""
        x1, y1, x2, y2 = bbox
        margin = self.config.edge_margin_px
        big_enough = min(x2 - x1, y2 - y1) >= self.config.min_face_px
        inside = x1 >= margin and y1 >= margin and x2 <= frame_w - margin and y2 <= frame_h - margin
        return bool(big_enough and inside)

    def _event(self, kind: str, shot: _TrackShot, end_ts: float | None = None, below: bool = False) -> Event:
        best = shot.best
        assert best is not None
        if shot.encoded is not best:  # encode only what an event carries, once per best frame
            shot.face_jpeg = encode_capped(best.crop, self.config.face_jpeg_max_bytes)
            shot.frame_jpeg = encode_capped(best.frame_small, self.config.frame_jpeg_max_bytes)
            shot.encoded = best
        shot.seq += 1
        return Event(type=kind, event_id=shot.event_id, camera=self.camera, track=best.track_id, seq=shot.seq,
                     ts=best.ts, start_ts=best.start_ts, end_ts=end_ts, bbox=[float(v) for v in best.bbox],
                     landmarks=[[float(x), float(y)] for x, y in best.landmarks], det_score=best.det_score,
                     quality=shot.best_quality, model=self.model_tag, frame_w=best.frame_w, frame_h=best.frame_h,
                     face_jpeg=shot.face_jpeg, frame_jpeg=shot.frame_jpeg, owner_epoch=self.owner_epoch,
                     below_min_quality=below)

    def on_scored(self, sample: Sample, quality: float) -> None:
        shot = self.shots.setdefault(sample.track_id, _TrackShot(uuid.uuid4().hex))
        if quality > shot.best_quality:
            shot.best, shot.best_quality = sample, float(quality)
        if sample.hits < self.min_hits or shot.best is None:
            return
        shot.confirmed = True
        if self.config.min_quality is not None and shot.best_quality < self.config.min_quality:
            return
        if shot.published_quality is None:
            self._publish("new", shot, sample.ts)
        elif (shot.best_quality - shot.published_quality >= self.config.update_margin
              and sample.ts - shot.last_publish_ts >= self.config.update_interval_s):
            self._publish("update", shot, sample.ts)

    def _publish(self, kind: str, shot: _TrackShot, ts: float) -> None:
        self.emit(self._event(kind, shot))
        shot.published_quality, shot.last_publish_ts = shot.best_quality, ts

    def on_end(self, track_id: int, end_ts: float) -> None:
        """The track ended: publish its final best (tracks that were announced, or held back by min_quality)."""
        shot = self.shots.pop(track_id, None)
        if shot is not None and shot.published_quality is not None:
            self.emit(self._event("end", shot, end_ts=end_ts))
        elif shot is not None and shot.confirmed:
            self.below_min_quality += 1
            self.emit(self._event("end", shot, end_ts=end_ts, below=True))
