"""The tracker follows faces that move more than their own width between two detections."""

from __future__ import annotations

import numpy as np

from engines.detections import Faces
from gate.tracker import Tracker


def _faces(boxes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Faces(boxes, scores, np.zeros((len(boxes), 5, 2), np.float32))


def _box(cx, cy, w):
    return [cx - w / 2, cy - 0.65 * w, cx + w / 2, cy + 0.65 * w]


def test_a_face_walking_across_at_five_detections_per_second_keeps_one_track():
    # 1.4 m/s across the view, a 0.2 m face: 7 face widths a second, 1.4 widths between detections (IoU 0).
    tracker = Tracker(iou_threshold=0.3, max_unseen_s=2.0)
    ids = set()
    for k in range(15):
        update = tracker.update(_faces([_box(100 + 1.4 * 80 * k, 300, 80)]), k * 0.2)
        ids |= {t.track_id for t, _ in update.matched}
    assert len(ids) == 1
    assert next(iter(tracker.tracks.values())).hits == 15


def test_two_faces_crossing_keep_their_tracks():
    tracker = Tracker()
    left_ids, right_ids = set(), set()
    for k in range(12):
        left = _box(200 + 60 * k, 300, 70)  # walking right
        right = _box(900 - 60 * k, 310, 75)  # walking left; they cross around k = 6
        update = tracker.update(_faces([left, right]), k * 0.2)
        for track, det in update.matched:
            (left_ids if det == 0 else right_ids).add(track.track_id)
    assert len(left_ids) == 1 and len(right_ids) == 1 and left_ids != right_ids


def test_distance_matching_does_not_join_faces_of_very_different_size_or_far_apart():
    tracker = Tracker()
    tracker.update(_faces([_box(300, 300, 80)]), 0.0)
    update = tracker.update(_faces([_box(420, 300, 200)]), 0.2)  # 2.5× larger: another face
    assert len(update.started) == 1
    tracker = Tracker()
    tracker.update(_faces([_box(300, 300, 80)]), 0.0)
    update = tracker.update(_faces([_box(300 + 80 * 4, 300, 80)]), 0.2)  # 4 widths in 0.2 s: 20 widths/s
    assert len(update.started) == 1

