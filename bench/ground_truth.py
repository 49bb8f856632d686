"""Matching what the gate reported to the walk-by ground truth: clock, persons, tracking figures.

The gate stamps a file's frames with ``wall-clock start + media time``, so a candidate's
frame is ``k0 + round((ts − first_ts) · fps)`` for one unknown ``k0`` per video (the
frame of its earliest candidate). :func:`sync_clock` finds ``k0`` by trying every frame
and keeping the one where the candidates' boxes overlap the true face boxes best; at
the right offset nearly every candidate overlaps its person closely (the mean IoU is
reported, so a failed sync cannot pass unnoticed).

A track belongs to the person most of its candidates overlap (IoU ≥ ``MATCH_IOU``);
its purity is the fraction of its candidates on that person.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

MATCH_IOU = 0.3


@dataclass
class Candidate:
    """One face the gate scored: what the bench's scoring observer recorded."""

    camera: str
    track: int
    ts: float
    bbox: np.ndarray  # source pixels
    det_score: float
    quality: float
    crop: np.ndarray  # aligned 112×112 BGR, as published (JPEG round trip)
    frame: int = -1  # video frame index, after sync
    person: int | None = None  # ground-truth person, after matching


class TruthIndex:
    """Per frame, the true face boxes of one video (array lookups instead of dict walks)."""

    def __init__(self, truth: dict) -> None:
        self.fps = truth["fps"]
        self.frames = truth["frames"]
        walkers = truth["walkers"]
        slots = max(Counter(f for w in walkers for f in w["frames"]).values(), default=1)
        self.boxes = np.full((self.frames, slots, 4), np.nan)
        self.persons = np.full((self.frames, slots), -1, dtype=np.int64)
        fill = np.zeros(self.frames, dtype=np.int64)
        for walker in walkers:
            for frame, box in zip(walker["frames"], walker["boxes"], strict=True):
                slot = fill[frame]
                self.boxes[frame, slot] = box
                self.persons[frame, slot] = walker["person"]
                fill[frame] += 1
        self.identity = {w["person"]: w["identity"] for w in walkers}

    def overlaps(self, frames: np.ndarray, bboxes: np.ndarray) -> np.ndarray:
        """IoU of each candidate box with every true box of its frame: C × slots (0 where none)."""
        inside = (frames >= 0) & (frames < self.frames)
        truth = self.boxes[np.clip(frames, 0, self.frames - 1)]
        x1 = np.maximum(bboxes[:, None, 0], truth[..., 0])
        y1 = np.maximum(bboxes[:, None, 1], truth[..., 1])
        x2 = np.minimum(bboxes[:, None, 2], truth[..., 2])
        y2 = np.minimum(bboxes[:, None, 3], truth[..., 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area_c = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
        area_t = (truth[..., 2] - truth[..., 0]) * (truth[..., 3] - truth[..., 1])
        iou = inter / np.maximum(area_c[:, None] + area_t - inter, 1e-9)
        iou = np.nan_to_num(iou, nan=0.0)
        iou[~inside] = 0.0
        return iou


def sync_clock(candidates: list[Candidate], truth: TruthIndex) -> tuple[int, float]:
    """Set each candidate's ``frame``; return (frame of the earliest candidate, mean best IoU there)."""
    if not candidates:
        return 0, 0.0
    ts = np.array([c.ts for c in candidates])
    relative = np.round((ts - ts.min()) * truth.fps).astype(np.int64)
    bboxes = np.stack([c.bbox for c in candidates]).astype(np.float64)
    best_k, best_score = 0, -1.0
    for k in range(0, max(1, truth.frames - int(relative.max()))):
        score = float(truth.overlaps(k + relative, bboxes).max(axis=1).mean())
        if score > best_score:
            best_k, best_score = k, score
    for candidate, offset in zip(candidates, relative, strict=True):
        candidate.frame = int(best_k + offset)
    return best_k, best_score


def match_persons(candidates: list[Candidate], truth: TruthIndex) -> None:
    """Set each candidate's ``person``: the true face it overlaps most (IoU ≥ MATCH_IOU), else None."""
    if not candidates:
        return
    frames = np.array([c.frame for c in candidates])
    iou = truth.overlaps(frames, np.stack([c.bbox for c in candidates]).astype(np.float64))
    slot = iou.argmax(axis=1)
    for i, candidate in enumerate(candidates):
        person = int(truth.persons[frames[i], slot[i]]) if iou[i, slot[i]] >= MATCH_IOU else -1
        candidate.person = person if person >= 0 else None


@dataclass
class TrackTruth:
    camera: str
    track: int
    person: int | None  # the majority person (None: the track never overlapped a true face)
    purity: float  # fraction of its candidates on that person
    candidates: int


def track_truth(candidates: list[Candidate]) -> dict[tuple[str, int], TrackTruth]:
    """Per (camera, track): its person and purity."""
    grouped: dict[tuple[str, int], list[Candidate]] = {}
    for candidate in candidates:
        grouped.setdefault((candidate.camera, candidate.track), []).append(candidate)
    result = {}
    for key, members in grouped.items():
        votes = Counter(c.person for c in members)
        person, count = votes.most_common(1)[0]
        if person is None and len(votes) > 1:  # prefer a real person when some candidates matched none
            person, count = next((p, n) for p, n in votes.most_common() if p is not None)
        result[key] = TrackTruth(key[0], key[1], person, count / len(members), len(members))
    return result
