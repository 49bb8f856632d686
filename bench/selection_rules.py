"""Which face of a track to hand to recognition: the gate's choice vs the rules a user might pick.

Every rule chooses among the same candidates: the faces of one track that the gate
scored (matched, eligible, at most one every ``score_interval_s``). Rules:

- ``first``: the first eligible frame (what a gate without quality does when it sends at once);
- ``largest``: the largest face box;
- ``det_score``: the highest detector confidence;
- ``sharpest``: the highest variance of the Laplacian of the aligned crop;
- ``area_x_score``: face area × detector score (the best-snapshot heuristic of popular NVR software);
- ``random``: a random candidate, as its expectation (the mean over all candidates: no draw noise);
- ``oracle``: the candidate most similar to the person's own gallery photo (a ceiling no
  deployed system has: it needs the answer).

The gate's own choice is the face in its published ``end`` event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from bench.ground_truth import Candidate


def box_area(candidate: Candidate) -> float:
    x1, y1, x2, y2 = candidate.bbox
    return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop (the usual focus measure)."""
    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


RULES: dict[str, Callable[[list[Candidate]], int]] = {
    "first": lambda cs: int(np.argmin([c.ts for c in cs])),
    "largest": lambda cs: int(np.argmax([box_area(c) for c in cs])),
    "det_score": lambda cs: int(np.argmax([c.det_score for c in cs])),
    "sharpest": lambda cs: int(np.argmax([sharpness(c.crop) for c in cs])),
    "area_x_score": lambda cs: int(np.argmax([box_area(c) * c.det_score for c in cs])),
}
BASELINES = (*RULES, "random")


@dataclass
class PublishedTrack:
    """One ``end`` event assigned to a true person, with the candidates of its track."""

    camera: str
    track: int
    identity: str
    face: np.ndarray  # the event's face_jpeg, decoded
    quality: float
    candidates: list[Candidate]


@dataclass
class Scores:
    rank1: float  # fraction of tracks whose chosen face is nearest to its own identity's gallery photo
    genuine: float  # mean cosine similarity of the chosen face to its own gallery photo


def evaluate(tracks: list[PublishedTrack], embed: Callable[[np.ndarray], np.ndarray],
             gallery: dict[str, np.ndarray], gate_only: bool = False) -> dict[str, Scores]:
    """Rank-1 and mean genuine similarity of the gate, every rule and the oracle, on the same tracks.

    ``gallery``: identity → enrolment crop (aligned 112×112 BGR); ``embed``: crops → unit vectors;
    ``gate_only``: the gate's faces only (no candidates embedded).
    """
    if not tracks:
        return {}
    names = sorted(gallery)
    gallery_vectors = embed(np.stack([gallery[n] for n in names]))
    crops = [t.face for t in tracks] + ([] if gate_only else [c.crop for t in tracks for c in t.candidates])
    vectors = embed(np.stack(crops))
    similarity = vectors @ gallery_vectors.T
    own = np.array([names.index(t.identity) for t in tracks])
    gate_sim = similarity[: len(tracks)]
    results: dict[str, list[tuple[bool, float]]] = {k: [] for k in ("gate", *BASELINES, "oracle")}
    if gate_only:
        results = {"gate": [(bool(gate_sim[i].argmax() == own[i]), float(gate_sim[i, own[i]]))
                            for i in range(len(tracks))]}
    row = len(tracks)
    for i, track in enumerate([] if gate_only else tracks):
        sims = similarity[row: row + len(track.candidates)]
        row += len(track.candidates)
        correct = sims.argmax(axis=1) == own[i]
        genuine = sims[:, own[i]]
        results["gate"].append((bool(gate_sim[i].argmax() == own[i]), float(gate_sim[i, own[i]])))
        for name, rule in RULES.items():
            chosen = rule(track.candidates)
            results[name].append((bool(correct[chosen]), float(genuine[chosen])))
        results["random"].append((float(correct.mean()), float(genuine.mean())))
        best = int(genuine.argmax())
        results["oracle"].append((bool(correct[best]), float(genuine[best])))
    return {name: Scores(float(np.mean([r[0] for r in rows])), float(np.mean([r[1] for r in rows])))
            for name, rows in results.items()}
