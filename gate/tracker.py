"""Face tracker: IoU association with constant-velocity prediction, three-stage matching.

ByteTrack's idea: match confident detections first, then give unmatched tracks a second
chance with the low-confidence ones (a face turning away scores lower but is the same
face). A third stage matches by distance: someone walking across the view moves about
seven face widths a second (1.4 m/s, a face 0.2 m wide) whatever their distance, so at
5 detections a second a face moves more than its own width between two detections and
IoU alone starts a new track at every detection until the velocity is known. Remaining
confident detections and tracks are matched when the detection's centre lies within
``max_face_speed`` face widths per second (of the time since the track was last seen) of
the predicted centre and its size is similar. In the first and third stages, confirmed tracks (two hits
or more) choose before tracks seen once, so a face first seen where another is passing
does not take that one's track. New tracks start only from confident detections. A
track is *matched* in a frame only when a detection was assigned to it: only those frames
may be scored.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from engines.detections import Faces


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of N×4 and M×4 boxes (x1, y1, x2, y2)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


MAX_PREDICT_S = 1.0  # a track's motion is extrapolated at most this far (a lost face does not keep flying)
MAX_SIZE_RATIO = 1.5  # a face's width changes less than this between two detections that continue a track


@dataclass
class Track:
    """One face followed across frames."""

    track_id: int
    box: np.ndarray
    first_ts: float
    last_ts: float
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box units per second

    def predicted(self, ts: float) -> np.ndarray:
        return self.box + self.velocity * min(max(0.0, ts - self.last_ts), MAX_PREDICT_S)

    def update(self, box: np.ndarray, ts: float) -> None:
        dt = ts - self.last_ts
        if dt > 1e-6:
            measured = (box - self.box) / dt  # the second sighting sets the velocity; later ones smooth it
            self.velocity = measured if self.hits == 1 else 0.5 * self.velocity + 0.5 * measured
        self.box, self.last_ts = box.astype(np.float64), ts
        self.hits += 1


@dataclass
class TrackUpdate:
    """What one detection frame did: matched (track, detection index) pairs and ended tracks."""

    matched: list[tuple[Track, int]]
    started: list[Track]
    ended: list[Track]


class Tracker:
    """Tracks of one camera. Feed it every detection frame with its timestamp."""

    def __init__(self, iou_threshold: float = 0.3, max_unseen_s: float = 2.0, high_score: float = 0.75,
                 first_id: int = 1, track_ids: Iterator[int] | None = None, max_face_speed: float = 8.0) -> None:
        """``track_ids`` numbers new tracks; pass the same iterator to a camera's next tracker so its
        numbers go on instead of starting again at ``first_id``."""
        self.iou_threshold = iou_threshold
        self.max_unseen_s = max_unseen_s
        self.high_score = high_score
        self.max_face_speed = max_face_speed  # face widths per second, for the distance stage
        self.tracks: dict[int, Track] = {}
        self._ids = track_ids if track_ids is not None else itertools.count(first_id)

    def _associate(self, track_ids: list[int], boxes: np.ndarray, det_indices: np.ndarray | list[int],
                   ts: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        if not track_ids or len(det_indices) == 0:
            return [], list(track_ids), list(det_indices)
        predicted = np.stack([self.tracks[t].predicted(ts) for t in track_ids])
        overlap = iou_matrix(predicted, boxes[det_indices])
        rows, cols = linear_sum_assignment(-overlap)
        pairs = [(track_ids[r], int(det_indices[c])) for r, c in zip(rows, cols, strict=True)
                 if overlap[r, c] >= self.iou_threshold]
        used_t = {p[0] for p in pairs}
        used_d = {p[1] for p in pairs}
        return pairs, [t for t in track_ids if t not in used_t], [int(d) for d in det_indices if d not in used_d]

    def _associate_by_distance(self, track_ids: list[int], boxes: np.ndarray, det_indices: list[int],
                               ts: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Centre distance in face widths, within reach at ``max_face_speed``, sizes within MAX_SIZE_RATIO."""
        if not track_ids or not det_indices:
            return [], list(track_ids), list(det_indices)
        predicted = np.stack([self.tracks[t].predicted(ts) for t in track_ids])
        detected = boxes[det_indices]
        pred_w = np.maximum(predicted[:, 2] - predicted[:, 0], 1.0)
        det_w = np.maximum(detected[:, 2] - detected[:, 0], 1.0)
        pred_c = (predicted[:, :2] + predicted[:, 2:]) / 2
        det_c = (detected[:, :2] + detected[:, 2:]) / 2
        distance = np.linalg.norm(pred_c[:, None] - det_c[None], axis=2) / np.sqrt(pred_w[:, None] * det_w[None])
        elapsed = np.array([min(ts - self.tracks[t].last_ts, MAX_PREDICT_S / 2) for t in track_ids])
        ratio = det_w[None] / pred_w[:, None]
        allowed = ((distance <= 0.5 + self.max_face_speed * elapsed[:, None])
                   & (ratio < MAX_SIZE_RATIO) & (ratio > 1 / MAX_SIZE_RATIO))
        rows, cols = linear_sum_assignment(np.where(allowed, distance, 1e6))
        pairs = [(track_ids[r], det_indices[c]) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]
        used_t = {p[0] for p in pairs}
        used_d = {p[1] for p in pairs}
        return pairs, [t for t in track_ids if t not in used_t], [d for d in det_indices if d not in used_d]

    def update(self, faces: Faces, ts: float) -> TrackUpdate:
        boxes = faces.boxes_px.astype(np.float64)
        high = np.nonzero(faces.scores >= self.high_score)[0]
        low = np.nonzero(faces.scores < self.high_score)[0]
        # Confirmed tracks choose first: a face seen once must not take the detection of an established
        # track whose face is passing over the spot where it was seen (paths crossing).
        confirmed = [t for t, track in self.tracks.items() if track.hits >= 2]
        tentative = [t for t, track in self.tracks.items() if track.hits < 2]
        pairs, unmatched_confirmed, unmatched_high = self._associate(confirmed, boxes, high, ts)
        tentative_pairs, unmatched_tentative, unmatched_high = self._associate(tentative, boxes, unmatched_high, ts)
        second, unmatched_tracks, _ = self._associate(unmatched_confirmed + unmatched_tentative, boxes, low, ts)
        third_confirmed, rest_confirmed, unmatched_high = self._associate_by_distance(
            [t for t in unmatched_tracks if t in unmatched_confirmed], boxes, unmatched_high, ts)
        third_tentative, rest_tentative, unmatched_high = self._associate_by_distance(
            [t for t in unmatched_tracks if t not in unmatched_confirmed], boxes, unmatched_high, ts)
        unmatched_tracks = rest_confirmed + rest_tentative
        matched: list[tuple[Track, int]] = []
        for track_id, det in pairs + tentative_pairs + second + third_confirmed + third_tentative:
            track = self.tracks[track_id]
            track.update(boxes[det], ts)
            matched.append((track, det))
        started = []
        for det in unmatched_high:
            track = Track(next(self._ids), boxes[det].copy(), ts, ts)
            self.tracks[track.track_id] = track
            started.append(track)
            matched.append((track, det))
        ended = [self.tracks.pop(t) for t in unmatched_tracks if ts - self.tracks[t].last_ts > self.max_unseen_s]
        return TrackUpdate(matched, started, ended)

    def expire(self, ts: float) -> list[Track]:
        """End tracks unseen for too long at ``ts`` (the camera's watchdog: no frames, so no detection)."""
        gone = [t for t, track in self.tracks.items() if ts - track.last_ts > self.max_unseen_s]
        return [self.tracks.pop(t) for t in gone]

    def end_all(self) -> list[Track]:
        """End every open track (camera detached or gate stopping)."""
        ended = list(self.tracks.values())
        self.tracks.clear()
        return ended
