"""Benchmark: CPU cost of the full gate relative to decoding alone, one 1080p25 RTSP camera.

Serves a 1080p25 H.264 file with the test RTSP server, then runs these side by side, each
its own process and a client of the same live stream, and measures each one's user +
system CPU seconds (``/proc/PID/stat``, all threads) over the same steady-state window of
``--seconds``, after ``--warmup`` seconds (imports, model loading, RTSP connect); side by
side, a machine shared with other work loads them alike:

  (a) decoding alone: the gate's own source code path (PyAV, same settings), every frame
      decoded and none converted: the gate converts only the frames it detects on;
  (b) the full gate: ``gate run`` (motion test, detect at 5 fps, track, score, publish to
      a local Redis), with the default configuration unless ``--set`` says otherwise.

Scenes (``--scene``, made once and cached):

  face   the sample video of a woman's face, re-encoded at 1080p25 (a face in every frame);
  empty  a walk-by scene with nobody in it: sensor noise and a slow lighting drift;
  mixed  the walk-by scene with people in view about a quarter of the time (one or two at
         a time, faces 30-200 px), from the walk-by generator (``bench/walkby``).

The walk-by scenes are encoded as a camera's main stream is (4 Mbit/s, rate-capped, 2 s
GOP): encoded at a constant quality instead, a static scene shrinks to 0.1-0.5 Mbit/s and
decodes at half the cost of real footage, which would inflate every ratio.

``--compare-motion`` adds the gate with ``detection.motion.enabled: false`` on the same
stream; ``--breakdown`` adds two runs that say where (b) − (a) goes: the gate with
detection but no scoring (no face passes the size guard), and decoding plus a BGR
conversion of every frame at the detector's size.

Last line: ``ratio=<b/a>`` for one scene, ``ratio_<scene>=…`` for several (targets on 2
cores: empty ≤ 1.15, mixed ≤ 1.4, face no worse than without motion gating).

    python bench/gate_cpu.py [--scene face,empty,mixed] [--seconds 30] [--compare-motion] [--breakdown]
                             [--set detection.max_side=480 ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DECODE_ONLY = """
import sys, threading
from gate.config import SourceConfig
from gate.source import CameraSource
from gate.camera import WORKING_MAX_SIDE
stop = threading.Event()
threading.Timer(float(sys.argv[2]), stop.set).start()
source = CameraSource(sys.argv[1], SourceConfig(), stop, "tcp", WORKING_MAX_SIDE)
convert = len(sys.argv) > 3
count = sum(1 for frame in source.frames() if not convert or frame.image_at(640) is not None)
print(f"decoded {count} frames")
"""


def make_1080p(source: Path, target: Path, seconds: float = 60.0) -> Path:
    """Re-encode the sample video at 1920×1080, 25 fps, H.264 (looped to ``seconds``)."""
    if target.is_file():
        return target
    import av

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": "50", "bf": "0"}
        written = 0
        while written < seconds * 25:
            with av.open(str(source)) as src:
                for frame in src.decode(video=0):
                    image = av.VideoFrame.from_ndarray(
                        frame.to_ndarray(format="yuv420p", width=1920, height=1080), format="yuv420p")
                    image.pts, image.time_base = written, Fraction(1, 25)
                    for packet in stream.encode(image):
                        out.mux(packet)
                    written += 1
                    if written >= seconds * 25:
                        break
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(target)
    return target


def _cpu_now(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_seconds(cmds: list[list[str]], warmup: float, window: float, env: dict) -> list[float]:
    """CPU seconds each of ``cmds``, run side by side, spends in the same ``window`` after ``warmup`` seconds.

    Side by side, as clients of the same live stream: whatever else loads the machine loads
    all of them alike, so their ratios hold on a busy machine (their absolute values do not).
    """
    processes = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                 for cmd in cmds]
    try:
        time.sleep(warmup)  # the measured processes run meanwhile; nothing to synchronise on
        start = [_cpu_now(p.pid) for p in processes]
        time.sleep(window)
        used = [_cpu_now(p.pid) - s for p, s in zip(processes, start, strict=True)]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
    return used


CAMERA_KBPS = 4096  # a typical 1080p25 camera main stream (rate-capped: sensor noise costs bits, as on a camera)


def walkby_scene(scene: str, seconds: float, target_dir: Path) -> tuple[Path, dict]:
    """The empty or mixed 1080p25 walk-by scene (generated once, cached)."""
    from bench.bestshot import heldout_default
    from bench.walkby import VideoSpec, generate, load_identities
    from bench.walkby.scene import wall_texture
    from engines.paths import cache_root
    from engines.samples import gather_media

    people = heldout_default() or cache_root() / "seed" / "v7" / "heldout"
    identities = load_identities(people)
    excluded = {name: photos[0] for name, photos in identities.items()}  # no identification here
    texture = wall_texture(str(gather_media(cache_root() / "media", progress=False)["woman_pexels"]))
    spec = VideoSpec(seed=1401 if scene == "mixed" else 1402, width=1920, height=1080,
                     schedule="sparse" if scene == "mixed" else "empty", duration_s=seconds, occupancy=0.25,
                     first_arrival_s=3.0, bitrate_kbps=CAMERA_KBPS)
    [(video, truth)] = generate([spec], identities, excluded, target_dir, texture, progress=True)
    return video, truth


def window_occupancy(truth: dict, warmup: float, seconds: float, connect_s: float = 1.5) -> float:
    """Fraction of the measured window with someone in view (the stream starts when a process connects,
    about ``connect_s`` after it starts)."""
    first = int((warmup - connect_s) * truth["fps"])
    last = int((warmup + seconds - connect_s) * truth["fps"])
    seen = {f for w in truth["walkers"] for f in w["frames"] if first <= f < last}
    return len(seen) / max(1, last - first)


def parse_settings(items: list[str]) -> dict:
    """``SECTION.KEY=VALUE`` (nested keys allowed) → a nested dict for the YAML config."""
    import yaml

    settings: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        *sections, name = key.split(".")
        if not (sections and name and value):
            raise ValueError(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        target = settings
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = yaml.safe_load(value)
    return settings


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", default="face", help="face, empty, mixed, or several comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before the window")
    parser.add_argument("--compare-motion", action="store_true", help="also run the gate without motion gating")
    parser.add_argument("--breakdown", action="store_true", help="also measure detection without scoring and "
                        "decoding with every frame converted")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="gate setting for the measured runs, e.g. detection.max_side=480 (repeatable)")
    args = parser.parse_args()
    scenes = [s.strip() for s in args.scene.split(",")]
    if any(s not in ("face", "empty", "mixed") for s in scenes):
        parser.error("--scene takes face, empty, mixed (comma-separated)")
    try:
        settings = parse_settings(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    import yaml

    from engines.paths import cache_root
    from engines.samples import gather_media
    from tests.support.servers import start_redis, start_rtsp

    video_s = max(60.0, args.warmup + args.seconds + 35)
    videos, notes = {}, {}
    for scene in scenes:
        if scene == "face":
            media = gather_media(cache_root() / "media", progress=False)
            videos[scene] = make_1080p(media["woman_pexels"],
                                       cache_root() / "bench" / f"woman_1080p25_{video_s:.0f}s.mp4", video_s)
            notes[scene] = "the sample video's face in every frame"
        else:
            videos[scene], truth = walkby_scene(scene, max(120.0, video_s), cache_root() / "bench" / "walkby")
            notes[scene] = (f"{len(truth['walkers'])} walk-bys, someone in view {truth['occupancy']:.0%} of the "
                            f"video and about {window_occupancy(truth, args.warmup, args.seconds):.0%} of the "
                            f"window, noise σ {truth['noise_sigma']}, lighting ±12%")
    rtsp = start_rtsp({scene: path for scene, path in videos.items()})
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    redis_server = start_redis(work / "redis")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results: dict[str, list[tuple[str, float]]] = {}
    events: dict[str, int] = {}
    try:
        run_for = str(args.warmup + args.seconds + 30)
        for scene in scenes:
            url = rtsp.url(scene)
            runs: list[tuple[str, list[str]]] = [("decode alone", [sys.executable, "-c", DECODE_ONLY, url, run_for])]

            def gate(label: str, extra: dict | None = None, url: str = url, runs: list = runs,
                     scene: str = scene) -> None:
                prefix = f"{scene}{len(runs)}:"
                config = merged({"cameras": [{"name": "cam", "url": url}], "detection": {"fps": 5},
                                 "redis": {"prefix": prefix}}, merged(settings, extra or {}))
                path = work / f"gate{len(runs)}.yaml"
                path.write_text(yaml.safe_dump(config))
                runs.append((label, [sys.executable, "-m", "gate.cli", "run", "--config", str(path), "--redis",
                                     redis_server.url]))

            if args.breakdown:
                runs.append(("decode + BGR 640 px, every frame", [sys.executable, "-c", DECODE_ONLY, url, run_for,
                                                                   "convert"]))
                gate("gate, detection only (no scoring)", {"bestshot": {"min_face_px": 100000}})
            if args.compare_motion:
                gate("gate, motion gating off", {"detection": {"motion": {"enabled": False}}})
            gate("full gate")
            used = cpu_seconds([cmd for _, cmd in runs], args.warmup, args.seconds, env)
            results[scene] = [(label, cpu) for (label, _), cpu in zip(runs, used, strict=True)]
            events[scene] = redis_server.client().xlen(f"{scene}{len(runs) - 1}:events")
    finally:
        rtsp.stop()
        redis_server.stop()
    print(f"window {args.seconds:.0f}s after {args.warmup:.0f}s warm-up, 1080p25 H.264 over RTSP/TCP"
          + (f"; gate settings: {' '.join(args.set)}" if args.set else ""))
    ratios = {}
    for scene, rows in results.items():
        decode = rows[0][1]
        print(f"scene {scene}: {notes[scene]}")
        for label, used in rows:
            share = used / args.seconds
            print(f"  {label:34s} {used:6.1f} CPU s ({share:4.0%} of a core, {used / decode:.2f}× decode)")
        print(f"  {events[scene]} events from the full gate")
        ratios[scene] = rows[-1][1] / decode
    if len(ratios) == 1:
        print(f"ratio={next(iter(ratios.values())):.2f}")
    else:
        print(" ".join(f"ratio_{scene}={ratio:.2f}" for scene, ratio in ratios.items()))


if __name__ == "__main__":
    main()
