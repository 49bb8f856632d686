"""Soak and capacity: how many 1080p25 cameras one machine holds, nothing dropped, events on time.

Each step serves N cameras from the test RTSP server (GStreamer, pre-encoded files, over
TCP) and runs ``gate run`` as its own process with a local Redis and its metrics
endpoint, for ``--minutes`` after ``--warmup`` seconds. A step passes when, over the
measured window:

- no crop was dropped by the scorer and no event by the bus;
- every camera decoded at least 98% of its frames (a gate that cannot keep up falls
  behind the live stream);
- p99 of the pipeline's frame → event delay is under ``--p99`` seconds: from a face's
  frame time to its quality score (detection, scoring queue, scoring; the event is written
  right after), the gate's ``facegate_frame_to_score_seconds`` histogram. The delay of the
  events themselves (XADD time minus the event's best-frame time, ``new`` and ``update``)
  is printed too, but it also holds the best-shot policy's deliberate waits: a ``new``
  event waits for the track's second hit and may carry a best frame scored 0.4 s before
  it, an ``update`` waits out ``update_interval_s``; those are settings, not capacity.

Scenes: ``mixed`` (default) is the walk-by scene of ``bench/gate_cpu.py --scene mixed``:
1920×1080, 25 fps, people in view about a quarter of the time; each camera plays it from
a different point (whole GOPs rotated), so people do not arrive on every camera at once.
``door`` is the 640×360 sample video of one man (a face always in view), for memory soaks.

``--cameras 2,4,6,8`` steps up until a step fails (``--all-steps`` runs them all). Also
prints RSS after warm-up and at the end (memory growth), CPU used, events/s.

Last line: ``cameras=<most that passed> cameras_per_core=<…> p99_s=<…> dropped=<…> rss_growth=<…>``.

    python bench/soak.py [--scene mixed] [--cameras 2,4,6,8] [--minutes 3] [--warmup 30]
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
from dataclasses import dataclass
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIN_DECODED = 0.98


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(text: str, name: str, label: str | None = None) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and (label is None or label in line))


def histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts ``le → count`` of a Prometheus histogram in exposition text."""
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile from cumulative buckets, linear within a bucket (as Prometheus' histogram_quantile)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return float("nan")
    target, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= target:
            if bound == float("inf"):
                return previous_bound
            share = (target - previous_count) / max(buckets[bound] - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, buckets[bound]
    return previous_bound


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def rotated_loop(source: Path, target: Path, shift_gops: int, seconds: float) -> Path:
    """Remux ``source`` from its ``shift_gops``-th keyframe on, looping, until ``seconds`` long (no re-encoding)."""
    if target.is_file():
        return target
    tmp = target.with_suffix(".tmp.mp4")
    with av.open(str(source)) as template, av.open(str(tmp), "w") as dst:
        stream = template.streams.video[0]
        out = dst.add_stream_from_template(stream)
        keyframes = [i for i, p in enumerate(p for p in template.demux(stream) if p.dts is not None) if p.is_keyframe]
        skip = keyframes[shift_gops % len(keyframes)]
        step = int(1 / (float(stream.average_rate) * float(stream.time_base)))
        total = int(seconds * float(stream.average_rate))
        written = 0
        while written < total:
            with av.open(str(source)) as src:  # a muxed packet is consumed: demux afresh on every pass
                packets = (p for p in src.demux(src.streams.video[0]) if p.dts is not None)
                for index, packet in enumerate(packets):
                    if index < skip:
                        continue
                    packet.dts = packet.pts = written * step
                    packet.stream = out
                    dst.mux(packet)
                    written += 1
                    if written >= total:
                        break
            skip = 0
    tmp.replace(target)
    return target


def scene_videos(scene: str, cameras: int, seconds: float) -> list[Path]:
    from engines.paths import cache_root
    from engines.samples import gather_media
    from tests.support.servers import looped_copy

    folder = cache_root() / "bench"
    if scene == "door":
        media = gather_media(cache_root() / "media", progress=False)
        loops = int(seconds / 2.4) + 10  # single_face.mp4 lasts 2.4 s
        return [looped_copy(media["door_man_single"], folder / f"door_x{loops}.mp4", loops)] * cameras
    from bench.gate_cpu import walkby_scene

    base, truth = walkby_scene("mixed", 120.0, folder / "walkby")
    gops = truth["frames"] // 50
    return [rotated_loop(base, folder / f"mixed_{base.parent.name}_rot{(i * 7) % gops}_{seconds:.0f}s.mp4",
                         (i * 7) % gops, seconds) for i in range(cameras)]


@dataclass
class Step:
    cameras: int
    decoded_share: float  # worst camera: frames decoded / frames the stream sent in the window
    dropped: float
    p50_s: float  # pipeline: frame → score
    p99_s: float
    within_limit: float  # share of scored faces within the p99 limit (a histogram bucket bound)
    event_p50_s: float  # events: XADD − best frame time, new and update (policy waits included)
    event_p99_s: float
    events: int
    cpu_cores: float
    rss_start: float
    rss_end: float

    def passed(self, p99_limit: float) -> bool:
        return self.dropped == 0 and self.decoded_share >= MIN_DECODED and self.p99_s < p99_limit \
            and self.within_limit >= 0.99


def run_step(scene: str, cameras: int, minutes: float, warmup: float, p99_limit: float) -> Step:
    from tests.support.servers import start_redis, start_rtsp

    videos = scene_videos(scene, cameras, warmup + minutes * 60 + 60)
    rtsp = start_rtsp({f"cam{i}": video for i, video in enumerate(videos)})
    work = Path(tempfile.mkdtemp(prefix="facegate-soak-"))
    redis_server = start_redis(work / "redis")
    try:
        return _measure(cameras, minutes, warmup, p99_limit, rtsp, redis_server, work)
    finally:
        rtsp.stop()
        redis_server.stop()


def _measure(cameras: int, minutes: float, warmup: float, p99_limit: float, rtsp, redis_server, work: Path) -> Step:
    from gate.schema import Event
    from tests.support.servers import free_port

    port = free_port()
    config = work / "gate.yaml"
    config.write_text("cameras:\n" + "".join(f"  - name: cam{i}\n    url: {rtsp.url(f'cam{i}')}\n"
                                             for i in range(cameras)) + f"metrics_port: {port}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    gate = subprocess.Popen([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                             redis_server.url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)  # warm-up: the soak itself is the measurement
        before, cpu_before, rss_start = scrape(port), cpu_s(gate.pid), rss_mib(gate.pid)
        window_start = time.time()
        time.sleep(minutes * 60)
        after, cpu_after, rss_end = scrape(port), cpu_s(gate.pid), rss_mib(gate.pid)
        window_end = time.time()
    finally:
        gate.send_signal(signal.SIGTERM)
        gate.wait(60)
    client = redis_server.client()
    entries = client.xrange("facegate:events", min=f"{int(window_start * 1000)}", max=f"{int(window_end * 1000)}")
    latencies = sorted(int(entry_id.decode().split("-")[0]) / 1000 - event.ts for entry_id, event in
                       ((entry_id, Event.from_fields(fields)) for entry_id, fields in entries) if event.type != "end")
    window = window_end - window_start
    expected = 25 * window
    decoded = [metric(after, "facegate_frames_decoded_total", f'camera="cam{i}"')
               - metric(before, "facegate_frames_decoded_total", f'camera="cam{i}"') for i in range(cameras)]
    dropped = sum(metric(after, name) - metric(before, name)
                  for name in ("facegate_scoring_dropped_total", "facegate_bus_dropped_total"))
    nan = float("nan")
    start_buckets = histogram(before, "facegate_frame_to_score_seconds")
    buckets = {b: c - start_buckets.get(b, 0.0) for b, c in histogram(after, "facegate_frame_to_score_seconds").items()}
    scored = buckets.get(float("inf"), 0.0)
    within = max((c for b, c in buckets.items() if b <= p99_limit), default=0.0) / scored if scored else 0.0
    return Step(cameras, min(decoded) / expected, dropped, quantile(buckets, 0.5), quantile(buckets, 0.99), within,
                latencies[len(latencies) // 2] if latencies else nan,
                latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else nan,
                len(entries), (cpu_after - cpu_before) / window, rss_start, rss_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", choices=("mixed", "door"), default="mixed")
    parser.add_argument("--cameras", default="2,4,6,8", help="camera counts to step through, comma-separated")
    parser.add_argument("--minutes", type=float, default=3.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the window")
    parser.add_argument("--p99", type=float, default=0.5, help="p99 frame→event limit, seconds")
    parser.add_argument("--all-steps", action="store_true", help="keep stepping after a step fails")
    args = parser.parse_args()
    steps = [int(n) for n in args.cameras.split(",")]
    cores = os.cpu_count() or 1
    print(f"scene {args.scene}, {cores} cores, {args.minutes:g} min per step after {args.warmup:.0f} s warm-up; "
          f"load before: {os.getloadavg()[0]:.1f}")
    print("pipeline = frame → score (p50, p99); events = XADD − best frame, new/update (policy waits included)")
    print(f"{'cameras':>7} {'decoded':>8} {'dropped':>7} {'pipeline s':>13} {'events s':>13} {'events':>6} "
          f"{'cores':>6} {'RSS MiB':>13}  pass")
    best: Step | None = None
    for count in steps:
        step = run_step(args.scene, count, args.minutes, args.warmup, args.p99)
        ok = step.passed(args.p99)
        print(f"{step.cameras:7d} {step.decoded_share:8.1%} {step.dropped:7.0f} {step.p50_s:6.3f} {step.p99_s:6.3f} "
              f"{step.event_p50_s:6.3f} {step.event_p99_s:6.3f} {step.events:6d} {step.cpu_cores:6.2f} "
              f"{step.rss_start:6.0f}→{step.rss_end:<6.0f}  {'yes' if ok else 'no'}", flush=True)
        if ok:
            best = step
        elif not args.all_steps:
            break
    if best is None:
        print(f"cameras=0 cameras_per_core=0 p99_s=nan dropped=nan rss_growth=nan (load now "
              f"{os.getloadavg()[0]:.1f})")
        return
    print(f"cameras={best.cameras} cameras_per_core={best.cameras / cores:.1f} p99_s={best.p99_s:.3f} "
          f"dropped={best.dropped:.0f} rss_growth={best.rss_end / best.rss_start - 1:.3f}")


if __name__ == "__main__":
    main()
