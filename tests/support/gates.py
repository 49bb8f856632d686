"""A real gate in a thread of the test process, readers of what it writes to Redis, and scored samples."""

from __future__ import annotations

import threading
import time

import numpy as np

from gate.bestshot import Sample
from gate.config import CameraConfig, GateConfig, RedisConfig, SourceConfig
from gate.schema import Event

# Short timeouts and backoff, so camera faults show within a test's patience.
TEST_SOURCE = SourceConfig(open_timeout_s=3, read_timeout_s=3, backoff_initial_s=0.5, backoff_max_s=2)


class GateThread:
    """``Gate.run`` on a thread; ``close`` stops it (tracks ended, buffers flushed) and checks it stopped."""

    def __init__(self, config: GateConfig, redis_url: str) -> None:
        from gate.runner import Gate

        self.gate = Gate(config, redis_url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.gate.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()

    def __enter__(self) -> GateThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunningGate(GateThread):
    """A gate on these cameras with the test source settings (``**source`` overrides them)."""

    def __init__(self, redis_url: str, cameras: list[CameraConfig], metrics_port: int | None = None,
                 redis_config: RedisConfig | None = None, **source) -> None:
        config = GateConfig(cameras=cameras, metrics_port=metrics_port, redis=redis_config or RedisConfig(),
                            source=SourceConfig(**{**TEST_SOURCE.model_dump(exclude_unset=True), **source}))
        super().__init__(config, redis_url)


def sample(track_id: int, hits: int, ts: float, value: int = 0) -> Sample:
    """A scored frame of a track for the best-shot stage (a ``value``-filled crop tells frames apart)."""
    crop = np.full((112, 112, 3), value, np.uint8)
    return Sample(track_id, hits, ts, 0.0, crop, np.zeros((90, 160, 3), np.uint8), np.array([10, 10, 80, 90.0]),
                  np.zeros((5, 2)), 0.9, 640, 360)


def read_stream(client, key: str, until, timeout_s: float = 45.0) -> list[tuple[str, dict]]:
    """Entries of ``key`` from the start, blocking on new ones until ``until(entries)`` holds.

    Reads at least once, so ``until=lambda e: True`` returns everything there is now.
    """
    entries: list[tuple[str, dict]] = []
    last = "0-0"
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        reply = client.xread({key: last}, block=int(max(0.05, min(remaining, 1.0)) * 1000), count=1000)
        for _, items in reply or []:
            for entry_id, fields in items:
                last = entry_id.decode()
                entries.append((last, fields))
        if until(entries):
            return entries
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {key}; got {len(entries)} entries")


def events_of(entries) -> list[Event]:
    return [Event.from_fields(fields) for _, fields in entries]


def statuses(entries) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
