"""Leases that really fence: a paused Redis, fencing tokens, clocks that disagree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from gate.schema import Keys
from tests.support.gates import events_of, read_stream
from tests.support.servers import start_redis, start_rtsp

KEYS = Keys()
CAMERAS = ("a", "b")
FAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), Path("/missing/libfaketime.so.1"))


def _spans_by_owner(events) -> dict[str, dict[int, tuple[float, float]]]:
    """Per camera and owner_epoch: (first start_ts, last time seen) over all that owner's events."""
    spans: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for ev in events:
        span = spans[ev.camera].setdefault(ev.owner_epoch, [ev.start_ts, ev.ts])
        span[0] = min(span[0], ev.start_ts)
        span[1] = max(span[1], ev.end_ts if ev.end_ts is not None else ev.ts)
    return {camera: {epoch: (s[0], s[1]) for epoch, s in owners.items()} for camera, owners in spans.items()}


def test_paused_redis_never_lets_two_owners_overlap(looped_video, tmp_path):
    """Two workers; Redis frozen (SIGSTOP) for longer than the lease; then it comes back.

    Every camera's lease expires while Redis is frozen, both workers race for the cameras
    again, and each acquisition takes a new fencing token. Afterwards no two owners of a
    camera have overlapping event time spans, the old owners emitted nothing after their
    lease deadline, and a subscriber that drops stale owners never sees an older owner
    after a newer one.
    """
    from gate.client import EventSubscriber

    lease_s, pause_s = 3.0, 8.0
    redis = start_redis(tmp_path / "redis")
    rtsp = start_rtsp({name: looped_video for name in CAMERAS})
    client = redis.client()
    config = tmp_path / "gate.yaml"
    config.write_text(f"scaleout:\n  enabled: true\n  lease_s: {lease_s}\ndetection:\n  fps: 3\n"
                      "bestshot:\n  update_margin: 0\n  update_interval_s: 0\n"  # an event per scored face
                      f"redis:\n  spill_dir: {tmp_path / 'spool'}\n")
    for name in CAMERAS:
        subprocess.run([sys.executable, "-m", "gate.cli", "attach", name, rtsp.url(name), "--redis", redis.url],
                       check=True, capture_output=True)
    command = [sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis", redis.url]
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    paused = False
    try:
        before = events_of(read_stream(client, KEYS.events, lambda e: {
            ev.camera for ev in events_of(e) if ev.type == "new"} == set(CAMERAS), 120))
        first_epochs = {ev.camera: ev.owner_epoch for ev in before}
        assert all(epoch >= 1 for epoch in first_epochs.values())
        os.kill(redis.process.pid, signal.SIGSTOP)
        paused, frozen_at = True, time.time()
        time.sleep(pause_s)  # the fault under test is a pause of this length, not a synchronisation
        os.kill(redis.process.pid, signal.SIGCONT)
        paused = False
        read_stream(client, KEYS.events, lambda e: all(any(
            ev.camera == name and ev.owner_epoch > first_epochs[name] and ev.type == "new" for ev in events_of(e))
            for name in CAMERAS), 90)
    finally:
        if paused:
            os.kill(redis.process.pid, signal.SIGCONT)
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = [process.wait(60) for process in workers]
        rtsp.stop()
    try:
        assert codes == [0, 0], [p.stderr.read()[-3000:] for p in workers]
        events = events_of(read_stream(client, KEYS.events, lambda e: True))
        spans = _spans_by_owner(events)
        for camera in CAMERAS:
            owners = sorted(spans[camera].items())
            assert len(owners) >= 2, (camera, owners)  # the pause forced a new owner (a new token)
            for (_, (_, earlier_end)), (_, (later_start, _)) in pairwise(owners):
                assert earlier_end <= later_start, (camera, owners)
            # The owners from before the pause went silent at their lease deadline at the latest.
            for epoch, (_, last) in owners:
                if epoch <= first_epochs[camera]:
                    assert last <= frozen_at + lease_s, (camera, epoch, last - frozen_at)
        # A subscriber that drops stale owners: per camera, the epochs it sees never go back.
        with EventSubscriber(redis.url, group="fenced", consumer="c1", drop_stale=True) as sub:
            delivered = []
            while batch := sub.read(count=500, block_ms=200):
                delivered += [event for _, event in batch]
            newest: dict[str, int] = {}
            for event in delivered:
                assert event.owner_epoch >= newest.get(event.camera, 0), event
                newest[event.camera] = event.owner_epoch
            assert len(delivered) + sub.stale_dropped == len(events)
    finally:
        redis.stop()


def test_heartbeats_use_the_redis_clock_not_the_workers(redis_server, redis_client):
    """A worker whose clock runs an hour ahead (another host, badly synchronised) still sees
    the others as live, and they see it: liveness is judged on Redis's clock."""
    from gate.leases import LeaseManager, new_worker_id

    if not FAKETIME.is_file():
        pytest.fail("libfaketime is not installed: run `make system` (apt-get install faketime)")
    here = LeaseManager(redis_client, KEYS, new_worker_id(), ttl_s=2.0)
    script = ("import sys, time; from gate.bus import connect; from gate.leases import LeaseManager; "
              "from gate.schema import Keys; m = LeaseManager(connect(sys.argv[1]), Keys(), 'skewed', ttl_s=2.0)\n"
              "print(time.time(), flush=True)\n"
              "for _ in sys.stdin:\n    print(' '.join(m.heartbeat()), flush=True)")
    env = {**os.environ, "LD_PRELOAD": str(FAKETIME), "FAKETIME": "+1h", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    skewed = subprocess.Popen([sys.executable, "-c", script, redis_server.url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert float(skewed.stdout.readline()) - time.time() > 3000  # that process lives an hour ahead
        seen_by_skewed: list[str] = []
        for _ in range(10):
            live_here = here.heartbeat()
            skewed.stdin.write("beat\n")
            skewed.stdin.flush()
            seen_by_skewed = skewed.stdout.readline().split()
        assert sorted(live_here) == sorted([here.worker_id, "skewed"])
        assert sorted(seen_by_skewed) == sorted([here.worker_id, "skewed"])
    finally:
        skewed.kill()
        skewed.wait()


def test_worker_ids_differ_even_with_the_same_host_and_pid():
    from gate.leases import new_worker_id

    ids = {new_worker_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith(f"{os.uname().nodename}-{os.getpid()}-") for i in ids)


def test_a_subscriber_drops_events_from_stale_owners(redis_server, redis_client):
    """Per camera the highest owner_epoch seen wins; lower ones are acknowledged and counted, not returned."""
    from gate.client import EventSubscriber
    from gate.schema import Event

    def event(camera: str, epoch: int, seq: int) -> Event:
        return Event("update", f"{camera}-{epoch}", camera, 1, seq, 1.0, 1.0, None, [1, 2, 30, 40], [[1, 2]] * 5,
                     0.9, 50.0, "m@1", 640, 360, b"", b"", owner_epoch=epoch)

    written = [event("a", 1, 1), event("a", 1, 2), event("b", 5, 1), event("a", 2, 1), event("a", 1, 3),
               event("a", 2, 2), event("a", 3, 1), event("a", 2, 3), event("b", 5, 2)]
    for ev in written:
        redis_client.xadd(KEYS.events, ev.to_fields())
    with EventSubscriber(redis_server.url, group="g", consumer="c", drop_stale=True) as sub:
        got = [ev for _, ev in sub.read(count=100, block_ms=100)]
        assert [(ev.camera, ev.owner_epoch, ev.seq) for ev in got] == [
            ("a", 1, 1), ("a", 1, 2), ("b", 5, 1), ("a", 2, 1), ("a", 2, 2), ("a", 3, 1), ("b", 5, 2)]
        assert sub.stale_dropped == 2
        assert redis_client.xpending(KEYS.events, "g")["pending"] == 7  # the stale ones were acknowledged
    with EventSubscriber(redis_server.url, group="plain", consumer="c") as sub:
        assert len(sub.read(count=100, block_ms=100)) == len(written)  # without drop_stale: everything
