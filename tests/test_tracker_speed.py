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



def test_a_face_seen_once_does_not_take_the_track_of_a_face_passing_over_it():
    # A walks right fast; B appears ahead of A walking left, is hidden behind A for one detection, and
    # reappears left of where A now is, while A stands where B was first seen (what swapped tracks before).
    tracker = Tracker()
    a_ids, b_ids = set(), set()
    for k, x in enumerate([860, 950, 1030]):
        a_ids |= {t.track_id for t, _ in tracker.update(_faces([[x, 140, x + 75, 237]]), k * 0.2).matched}
    update = tracker.update(_faces([[1100, 133, 1170, 223], [1226, 141, 1282, 213]]), 0.6)
    a_ids |= {t.track_id for t, d in update.matched if d == 0}
    b_ids |= {t.track_id for t, d in update.matched if d == 1}
    tracker.update(_faces([[1161, 129, 1228, 216]]), 0.8)  # B hidden behind A
    update = tracker.update(_faces([[1210, 134, 1274, 216], [1160, 150, 1221, 227]]), 1.0)
    a_ids |= {t.track_id for t, d in update.matched if d == 0}
    b_ids |= {t.track_id for t, d in update.matched if d == 1}
    assert len(a_ids) == 1 and len(b_ids) == 1 and a_ids != b_ids
