"""Start and stop real ``redis-server`` and RTSP server processes for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import redis

from gate.embedded import EmbeddedRedis

RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    """The gate's own embedded redis-server, as the tests use it."""

    server: EmbeddedRedis

    @property
    def process(self) -> subprocess.Popen:
        return self.server.process

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=False)

    def stop(self) -> None:
        self.server.stop()


def start_redis(workdir: Path, extra: tuple[str, ...] = (), port: int | None = None) -> RedisServer:
    """Start redis-server on a free (or the given) loopback port; return once it answers PING."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return RedisServer(EmbeddedRedis(port or 0, extra, workdir))


@dataclass
class RtspServer:
    process: subprocess.Popen
    port: int

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def start_rtsp(mounts: dict[str, Path], user: str = "", password: str = "", port: int = 0,
               audio: bool = False) -> RtspServer:
    """Start the GStreamer RTSP server (on ``port``, 0 = any free one); return once it printed its port.

    ``audio``: every mount also carries a live audio track that outlasts the file's video.
    """
    cmd = [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--port", str(port)] + (["--audio"] if audio else [])
    for name, path in mounts.items():
        cmd += ["--mount", f"{name}={path}"]
    if user:
        cmd += ["--user", user, "--password", password]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip() if process.stdout else ""
    if not line.startswith("READY "):
        process.kill()
        err = process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"RTSP server failed to start: {line} {err[-500:]}")
    return RtspServer(process, int(line.split()[1]))


def looped_copy(source: Path, target: Path, loops: int) -> Path:
    """Remux ``source`` ``loops`` times into one longer MP4 (no re-encoding).

    A camera never ends; a test clip does. Copying packets with shifted timestamps
    gives a long stream at the cost of a file copy.
    """
    if target.is_file():
        return target
    tmp = target.with_suffix(".tmp.mp4")
    with av.open(str(source)) as src, av.open(str(tmp), "w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        duration = None
        offset = 0
        for _ in range(loops):
            src.seek(0)
            last = 0
            for packet in src.demux(in_stream):
                if packet.dts is None:
                    continue
                step = packet.duration or 0
                last = max(last, packet.pts + step if packet.pts is not None else 0, packet.dts + step)
                packet.dts += offset
                if packet.pts is not None:
                    packet.pts += offset
                packet.stream = out_stream
                dst.mux(packet)
            duration = last
            offset += duration
    tmp.replace(target)
    return target


__all__ = ["RedisServer", "RtspServer", "free_port", "looped_copy", "start_redis", "start_rtsp"]
