"""Several workers share cameras through Redis leases: spread, take-over, never doubled."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from itertools import pairwise

from gate.schema import Keys
from tests.support.gates import events_of, read_stream, statuses
from tests.support.servers import start_rtsp

KEYS = Keys()
CAMERAS = ("a", "b", "c", "d")


def _owners(entries) -> dict[str, str]:
    owner: dict[str, str] = {}
    for s in sorted((s for s in statuses(entries) if s["kind"] == "camera"), key=lambda s: float(s["ts"])):
        if s["state"] == "acquired":
            owner[s["name"]] = s["worker"]
        elif s["state"] == "stopped" and owner.get(s["name"]) == s["worker"]:
            owner.pop(s["name"])
    return owner


def test_workers_share_cameras_and_take_over_from_a_dead_one(redis_server, redis_client, looped_video, tmp_path):
    server = start_rtsp({name: looped_video for name in CAMERAS})
    config = tmp_path / "gate.yaml"
    config.write_text("scaleout:\n  enabled: true\n  lease_s: 3\ndetection:\n  fps: 2\n")
    for name in CAMERAS:
        subprocess.run([sys.executable, "-m", "gate.cli", "attach", name, server.url(name), "--redis",
                        redis_server.url], check=True, capture_output=True)
    command = [sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis", redis_server.url]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for _ in range(3)]
    ids = {}
    try:
        for process in workers:  # "gate <worker id>: model …"
            ids[process.pid] = process.stdout.readline().split()[1].rstrip(":")
        spread = read_stream(redis_client, KEYS.status, lambda e: len(_owners(e)) == len(CAMERAS) and len(
            set(_owners(e).values())) == 3, 90)
        owners = _owners(spread)
        per_worker = defaultdict(list)
        for camera, worker in owners.items():
            per_worker[worker].append(camera)
        assert sorted(len(v) for v in per_worker.values()) == [1, 1, 2]  # even spread
        victim = next(p for p in workers if len(per_worker[ids[p.pid]]) >= 1)
        orphaned = set(per_worker[ids[victim.pid]])
        killed_at = time.time()
        victim.kill()
        victim.wait()
        after = read_stream(redis_client, KEYS.status, lambda e: all(
            _owners(e).get(c) not in (None, ids[victim.pid]) for c in CAMERAS), 60)
        events = read_stream(redis_client, KEYS.events, lambda e: orphaned <= {
            ev.camera for ev in events_of(e) if ev.type == "new" and ev.ts > killed_at}, 60)
        # A worker joins: the two survivors (2 + 2 cameras) give surplus back to it.
        joiner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        workers.append(joiner)
        ids[joiner.pid] = joiner.stdout.readline().split()[1].rstrip(":")
        joined_at = time.time()
        after = read_stream(redis_client, KEYS.status, lambda e: ids[joiner.pid] in _owners(e).values() and len(
            _owners(e)) == len(CAMERAS), 60)
        gained = {c for c, w in _owners(after).items() if w == ids[joiner.pid]}
        events = read_stream(redis_client, KEYS.events, lambda e: gained <= {
            ev.camera for ev in events_of(e) if ev.type == "new" and ev.ts > joined_at}, 60)
    finally:
        for process in workers:
            if process.poll() is None:
                process.terminate()
        for process in workers:
            process.wait(30)
        server.stop()
    assert orphaned <= {ev.camera for ev in events_of(events) if ev.ts > killed_at}
    rebalanced = defaultdict(list)
    for camera, worker in _owners(after).items():
        rebalanced[worker].append(camera)
    assert sorted(len(v) for v in rebalanced.values()) == [1, 1, 2] and ids[victim.pid] not in rebalanced
    assert gained and gained <= {ev.camera for ev in events_of(events) if ev.ts > joined_at}
    # By event ids: the video shows one person, so two workers on one camera at once would give
    # two tracks whose spans overlap. A track spans start_ts to its end_ts (last seen), or at
    # least to its latest best frame while it has no end event (the killed worker's tracks).
    spans: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for ev in events_of(events):
        span = spans[ev.camera].setdefault(ev.event_id, [ev.start_ts, ev.ts])
        span[1] = max(span[1], ev.end_ts if ev.type == "end" else ev.ts)
    assert len(spans) == len(CAMERAS)
    for camera, tracks in spans.items():
        ordered = sorted(tracks.values())
        assert all(later[0] >= earlier[1] for earlier, later in pairwise(ordered)), (camera, ordered)
    # Never two owners at once: each acquisition follows the previous owner's stop or death.
    holder: dict[str, tuple[str, float]] = {}
    for s in sorted((s for s in statuses(after) if s["kind"] == "camera"), key=lambda s: float(s["ts"])):
        name, worker, ts = s["name"], s["worker"], float(s["ts"])
        if s["state"] == "acquired":
            if name in holder:
                previous, _ = holder[name]
                assert previous == ids[victim.pid] and ts >= killed_at, (name, previous, worker)
            holder[name] = (worker, ts)
        elif s["state"] == "stopped" and holder.get(name, ("",))[0] == worker:
            holder.pop(name)
