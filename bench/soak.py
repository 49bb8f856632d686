"""Soak: N RTSP cameras (the test RTSP server serving the sample video) for M minutes.

Runs ``gate run`` as its own process with a local Redis and its metrics endpoint, and
prints events/s, end-to-end latency from frame time to XADD (p50, p99, from the event
entries' ids), dropped work, reconnects, and RSS after warm-up and at the end. The last
line: ``rss_growth=<end/after warm-up - 1> events_per_s=<…> dropped=<…>`` (target: 8
cameras at 640×360 for 10 minutes on 2 cores, RSS growth under 10% after warm-up).

    python bench/soak.py [--cameras 8] [--minutes 10] [--warmup 60]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    args = parser.parse_args()
    from engines.paths import cache_root
    from engines.samples import gather_media
    from gate.schema import Event
    from tests.support.servers import free_port, looped_copy, start_redis, start_rtsp

    media = gather_media(cache_root() / "media", progress=False)
    total_s = args.warmup + args.minutes * 60
    loops = int(total_s / 2.4) + 10  # single_face.mp4 lasts 2.4 s
    video = looped_copy(media["door_man_single"], cache_root() / "bench" / f"door_x{loops}.mp4", loops)
    rtsp = start_rtsp({f"cam{i}": video for i in range(args.cameras)})
    work = Path(tempfile.mkdtemp(prefix="facegate-soak-"))
    redis_server = start_redis(work / "redis")
    port = free_port()
    config = work / "gate.yaml"
    config.write_text("cameras:\n" + "".join(f"  - name: cam{i}\n    url: {rtsp.url(f'cam{i}')}\n"
                                             for i in range(args.cameras)) + f"metrics_port: {port}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    gate = subprocess.Popen([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                             redis_server.url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(args.warmup)  # warm-up: the soak itself is the measurement
        rss_start = rss_mib(gate.pid)
        time.sleep(args.minutes * 60)
        rss_end = rss_mib(gate.pid)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        gate.send_signal(signal.SIGTERM)
        gate.wait(60)
    client = redis_server.client()
    entries = client.xrange("facegate:events")
    # new/update events only: an end event carries the track's best frame, which may be old.
    latencies = sorted(int(entry_id.decode().split("-")[0]) / 1000 - event.ts for entry_id, event in
                       ((entry_id, Event.from_fields(fields)) for entry_id, fields in entries)
                       if event.type != "end")
    rtsp.stop()
    redis_server.stop()
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
    dropped = metric(metrics, "facegate_scoring_dropped_total")
    print(f"{args.cameras} cameras × {args.minutes:g} min (after {args.warmup:.0f}s warm-up)")
    print(f"events: {len(entries)} ({len(entries) / total_s:.2f}/s); frame→XADD latency p50 {p50:.3f}s "
          f"p99 {p99:.3f}s")
    print(f"frames decoded: {metric(metrics, 'facegate_frames_decoded_total'):.0f}; faces scored: "
          f"{metric(metrics, 'facegate_faces_scored_total'):.0f}; dropped: {dropped:.0f}; reconnects: "
          f"{metric(metrics, 'facegate_reconnects_total'):.0f}; queue now "
          f"{metric(metrics, 'facegate_scoring_queue_depth'):.0f}")
    print(f"RSS after warm-up {rss_start:.0f} MiB, at end {rss_end:.0f} MiB")
    print(f"rss_growth={rss_end / rss_start - 1:.3f} events_per_s={len(entries) / total_s:.2f} dropped={dropped:.0f}")


if __name__ == "__main__":
    main()
