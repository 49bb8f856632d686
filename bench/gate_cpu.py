"""Benchmark: CPU cost of the full gate relative to decoding alone, one 1080p25 RTSP camera.

Serves a 1080p25 H.264 file (made once from the sample video, cached) with the test
RTSP server, then runs for ``--seconds`` each, as separate processes measured with
``os.wait4`` (user + system CPU seconds of exactly that process):

  (a) decoding alone: the gate's own source code path (PyAV, same settings), frames dropped;
  (b) the full gate: ``gate run`` (detect at 5 fps, track, score, publish to a local Redis).

Last line: ``ratio=<b/a>`` (target ≤ 1.5 on 2 cores).

    python bench/gate_cpu.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
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
count = sum(1 for _ in source.frames())
print(f"decoded {count} frames")
"""


def make_1080p(source: Path, target: Path, seconds: float = 40.0) -> Path:
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
                    image = frame.reformat(width=1920, height=1080, format="yuv420p")
                    image.pts = written
                    for packet in stream.encode(image):
                        out.mux(packet)
                    written += 1
                    if written >= seconds * 25:
                        break
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(target)
    return target


def cpu_seconds(cmd: list[str], seconds: float, stop_with_signal: bool, env: dict) -> float:
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    if stop_with_signal:
        time.sleep(seconds)  # the measured window itself
        process.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    from engines.paths import cache_root
    from tests.support.servers import start_redis, start_rtsp
    from trainer.media import gather_media

    media = gather_media(cache_root() / "media", progress=False)
    video = make_1080p(media["woman_pexels"], cache_root() / "bench" / "woman_1080p25.mp4")
    rtsp = start_rtsp({"cam": video})
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    redis_server = start_redis(work / "redis")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        url = rtsp.url("cam")
        decode = cpu_seconds([sys.executable, "-c", DECODE_ONLY, url, str(args.seconds)], args.seconds, False, env)
        config = work / "gate.yaml"
        config.write_text(f"cameras:\n  - name: cam\n    url: {url}\ndetection:\n  fps: 5\n")
        full = cpu_seconds([sys.executable, "-m", "gate.cli", "run", "--config", str(config), "--redis",
                            redis_server.url], args.seconds, True, env)
        events = redis_server.client().xlen("facegate:events")
    finally:
        rtsp.stop()
        redis_server.stop()
    print(f"window {args.seconds:.0f}s, 1080p25 H.264 over RTSP/TCP")
    print(f"decode alone: {decode:6.1f} CPU s ({decode / args.seconds:.0%} of a core)")
    print(f"full gate:    {full:6.1f} CPU s ({full / args.seconds:.0%} of a core), {events} events")
    print(f"ratio={full / decode:.2f}")


if __name__ == "__main__":
    main()
