"""A gate with its console on, against a password-protected Redis and an RTSP camera that needs credentials.

Every secret is distinct and recognisable, so a test can look for each in everything
that leaves the process (responses, pages, logs).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import redis

from gate.config import CameraConfig, GateConfig, HttpConfig, QualityConfig
from tests.support.gates import TEST_SOURCE, GateThread
from tests.support.models import model_with_table
from tests.support.servers import RedisServer, RtspServer, start_redis, start_rtsp

TOKEN = "console-token-3f9d2c61b7a4e8"
REDIS_PASSWORD = "redis-pass-8c1e55aa09"
RTSP_USER = "camadmin"
RTSP_PASSWORD = "rtsp-pass-41d7b2e6"
SECRETS = (TOKEN, REDIS_PASSWORD, RTSP_PASSWORD)


class LogCapture(logging.Handler):
    """Every log record of the gate's side while the console runs (not the test's own HTTP client)."""

    SERVER_SIDE = ("gate", "engines", "uvicorn", "starlette", "fastapi", "sse_starlette", "redis")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in self.SERVER_SIDE:
            self.lines.append(self.format(record))


class ConsoleSetup:
    """Redis (password), RTSP server (credentials: mounts cam and cam2, the second video or the same),
    a model with a threshold table, and a gate running camera ``cam`` with its console on (token)."""

    def __init__(self, workdir: Path, video: Path, second_video: Path | None = None) -> None:
        self.logs = LogCapture()
        root = logging.getLogger()
        self._level = root.level
        root.addHandler(self.logs)
        root.setLevel(logging.DEBUG)
        self.redis: RedisServer = start_redis(workdir / "redis", extra=("--requirepass", REDIS_PASSWORD))
        self.rtsp: RtspServer | None = None
        try:
            self._start(workdir, video, second_video)
        except BaseException:
            self.close()
            raise

    def _start(self, workdir: Path, video: Path, second_video: Path | None) -> None:
        self.redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.redis.port}/0"
        self.rtsp = start_rtsp({"cam": video, "cam2": second_video or video}, user=RTSP_USER,
                               password=RTSP_PASSWORD)
        self.model = model_with_table(workdir / "model")
        config = GateConfig(cameras=[CameraConfig(name="cam", url=self.camera_url("cam"))], source=TEST_SOURCE,
                            quality=QualityConfig(model=str(self.model)),
                            http=HttpConfig(port=0, token=TOKEN))
        self.gate = GateThread(config, self.redis_url)
        assert self.gate.gate.console is not None
        self.url = self.gate.gate.console.url
        self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15)
        self.anonymous = httpx.Client(base_url=self.url, timeout=15)
        self.client = redis.Redis(port=self.redis.port, password=REDIS_PASSWORD)

    def camera_url(self, mount: str, password: str = RTSP_PASSWORD) -> str:
        return self.rtsp.url(mount).replace("rtsp://", f"rtsp://{RTSP_USER}:{password}@")

    def camera(self, name: str) -> dict | None:
        return next((c for c in self.api.get("/api/cameras").json() if c["name"] == name), None)

    def wait_for(self, condition, what: str, timeout_s: float = 45.0):
        """Poll ``condition()`` until it returns something truthy (the API is polled, as the page does)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.2)  # polling an HTTP API, as a page does

    def close(self) -> None:
        """Stop whatever started (also after a failed start)."""
        try:
            for name in ("api", "anonymous", "gate", "client"):
                if hasattr(self, name):
                    getattr(self, name).close()
        finally:
            if self.rtsp is not None:
                self.rtsp.stop()
            self.redis.stop()
            root = logging.getLogger()
            root.removeHandler(self.logs)
            root.setLevel(self._level)
