"""Benchmark: CPU cost of the full gate relative to decoding alone, one 1080p25 RTSP camera.

Serves a 1080p25 H.264 file (made once from the sample video, cached) with the test
RTSP server, then runs each as its own process and measures its user + system CPU
seconds (``/proc/PID/stat``, all threads) over the same steady-state window of
``--seconds``, after ``--warmup`` seconds (imports, model loading, RTSP connect):

  (a) decoding alone: the gate's own source code path (PyAV, same settings), every frame
      decoded and none converted: the gate converts only the frames it detects on;
  (b) the full gate: ``gate run`` (detect at 5 fps, track, score, publish to a local Redis).

``--breakdown`` adds two runs that say where (b) − (a) goes: the gate with detection but
no scoring (no face passes the size guard), and decoding plus a BGR conversion of every
frame at the detector's size (what a reader that converts every frame pays).

Last line: ``ratio=<b/a>`` (target ≤ 1.5 on 2 cores).

    python bench/gate_cpu.py [--seconds 30] [--breakdown] [--set detection.max_side=480 ...]
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


def cpu_seconds(cmd: list[str], warmup: float, window: float, env: dict) -> float:
    """CPU seconds ``cmd`` spends in ``window`` seconds after ``warmup`` seconds."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        time.sleep(warmup)  # the measured process runs meanwhile; nothing to synchronise on
        start = _cpu_now(process.pid)
        time.sleep(window)
        used = _cpu_now(process.pid) - start
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before the window")
    parser.add_argument("--breakdown", action="store_true", help="also measure detection without scoring and "
                        "decoding with every frame converted")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="gate setting for the measured runs, e.g. detection.max_side=480 (repeatable)")
    args = parser.parse_args()
    settings: dict[str, list[str]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not (section and name and value):
            parser.error(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        settings.setdefault(section, []).append(f"  {name}: {value}\n")
    from engines.paths import cache_root
    from engines.samples import gather_media
    from tests.support.servers import start_redis, start_rtsp

    media = gather_media(cache_root() / "media", progress=False)
    video = make_1080p(media["woman_pexels"], cache_root() / "bench" / "woman_1080p25_60s.mp4")
    rtsp = start_rtsp({"cam": video})
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    redis_server = start_redis(work / "redis")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        url = rtsp.url("cam")
        run_for = str(args.warmup + args.seconds + 30)
        rows: list[tuple[str, float]] = []

        def gate(label: str, extra: dict[str, list[str]] | None = None) -> float:
            sections = {"detection": ["  fps: 5\n"]}
            for source in (settings, extra or {}):
                for section, lines in source.items():
                    sections.setdefault(section, []).extend(lines)
            config = work / "gate.yaml"
            config.write_text(f"cameras:\n  - name: cam\n    url: {url}\n"
                              + "".join(f"{name}:\n{''.join(lines)}" for name, lines in sections.items()))
            used = cpu_seconds([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                                redis_server.url], args.warmup, args.seconds, env)
            rows.append((label, used))
            return used

        decode = cpu_seconds([sys.executable, "-c", DECODE_ONLY, url, run_for], args.warmup, args.seconds, env)
        rows.append(("decode alone", decode))
        if args.breakdown:
            converted = cpu_seconds([sys.executable, "-c", DECODE_ONLY, url, run_for, "convert"], args.warmup,
                                    args.seconds, env)
            rows.append(("decode + BGR 640 px, every frame", converted))
            gate("gate, detection only (no scoring)", {"bestshot": ["  min_face_px: 100000\n"]})
            redis_server.client().delete("facegate:events")
        full = gate("full gate")
        events = redis_server.client().xlen("facegate:events")
    finally:
        rtsp.stop()
        redis_server.stop()
    print(f"window {args.seconds:.0f}s after {args.warmup:.0f}s warm-up, 1080p25 H.264 over RTSP/TCP"
          + (f"; gate settings: {' '.join(args.set)}" if args.set else ""))
    for label, used in rows:
        print(f"{label:34s} {used:6.1f} CPU s ({used / args.seconds:4.0%} of a core, {used / decode:.2f}× decode)")
    print(f"{events} events from the full gate")
    print(f"ratio={full / decode:.2f}")


if __name__ == "__main__":
    main()
