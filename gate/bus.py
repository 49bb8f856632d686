"""Publishing to Redis Streams with a bounded buffer, so a Redis outage loses nothing.

Events and status entries go into an in-memory queue; one thread writes them with
pipelined XADD (MAXLEN ~ N). When Redis is unreachable the queue holds them; when it is
full, new entries spill to a local file (bounded in bytes; beyond it they are counted as
dropped) and everything is delivered in order after reconnect: memory first, then the
spill file, and new entries keep going to the file until it is drained. Redelivery after
an ambiguous failure is harmless: events carry event_id + seq.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import redis

from gate.redact import redact_text
from gate.schema import Event, Keys

log = logging.getLogger(__name__)


def connect(url: str, ssl_ca_certs: str | None = None, ssl_certfile: str | None = None,
            ssl_keyfile: str | None = None) -> redis.Redis:
    """A redis-py client for ``url`` (redis:// or rediss://), short timeouts, no decoding."""
    kwargs: dict = {"socket_timeout": 5, "socket_connect_timeout": 5, "health_check_interval": 15}
    if url.startswith("rediss://"):
        kwargs.update({k: v for k, v in {"ssl_ca_certs": ssl_ca_certs, "ssl_certfile": ssl_certfile,
                                          "ssl_keyfile": ssl_keyfile}.items() if v})
    return redis.Redis.from_url(url, **kwargs)


@dataclass
class BusStats:
    published_events: int = 0
    published_status: int = 0
    dropped: int = 0
    redis_errors: int = 0
    connected: bool = True
    disconnected_since: float | None = None
    spilled: int = 0  # entries waiting in the spill file


def _encode(stream: str, fields: dict) -> bytes:
    body = {k: ("b:" + base64.b64encode(v).decode()) if isinstance(v, bytes) else "s:" + str(v)
            for k, v in fields.items()}
    data = json.dumps([stream, body]).encode()
    return struct.pack(">I", len(data)) + data


def _decode(data: bytes) -> tuple[str, dict]:
    stream, body = json.loads(data)
    return stream, {k: base64.b64decode(v[2:]) if v.startswith("b:") else v[2:] for k, v in body.items()}


class SpillFile:
    """Append-only, length-prefixed entries on disk, read back in order, bounded in bytes."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.count = 0
        self._read_at = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    def append(self, stream: str, fields: dict) -> bool:
        record = _encode(stream, fields)
        if self.path.stat().st_size + len(record) > self.max_bytes:
            return False
        with open(self.path, "ab") as handle:
            handle.write(record)
        self.count += 1
        return True

    def take(self, limit: int) -> list[tuple[str, dict]]:
        out = []
        with open(self.path, "rb") as handle:
            handle.seek(self._read_at)
            while len(out) < limit and self.count > 0:
                (size,) = struct.unpack(">I", handle.read(4))
                out.append(_decode(handle.read(size)))
                self._read_at += 4 + size
                self.count -= 1
        if self.count == 0:
            self.path.write_bytes(b"")
            self._read_at = 0
        return out

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class Bus:
    """Ordered, buffered writer of the event and status streams."""

    def __init__(self, client: redis.Redis, keys: Keys, events_maxlen: int = 10_000, buffer_size: int = 10_000,
                 spill_dir: Path | None = None, spill_max_bytes: int = 512 * 2**20, worker_id: str = ""):
        self.client = client
        self.worker_id = worker_id
        self.keys = keys
        self.events_maxlen = events_maxlen
        self.stats = BusStats()
        self._queue: deque[tuple[str, dict]] = deque()
        self._buffer_size = buffer_size
        self._spill = SpillFile(spill_dir / f"bus-{os.getpid()}-{id(self):x}.spill", spill_max_bytes) \
            if spill_dir else None
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._deadline = float("inf")
        self.on_event_written = None  # callback(seconds from frame time to XADD), for metrics
        self._thread = threading.Thread(target=self._run, name="bus", daemon=True)
        self._thread.start()

    def _put(self, stream: str, fields: dict) -> None:
        with self._lock:
            if self._spill is not None and (self._spill.count or len(self._queue) >= self._buffer_size):
                if not self._spill.append(stream, fields):
                    self.stats.dropped += 1  # memory and spill file both full: counted, reported
                self.stats.spilled = self._spill.count
            elif len(self._queue) >= self._buffer_size:
                self._queue.popleft()
                self.stats.dropped += 1
                self._queue.append((stream, fields))
            else:
                self._queue.append((stream, fields))
            self._lock.notify()

    def publish_event(self, event: Event) -> None:
        self._put(self.keys.events, event.to_fields())

    def publish_status(self, kind: str, name: str, state: str, reason: str = "") -> None:
        self._put(self.keys.status, {"kind": kind, "name": name, "state": state, "worker": self.worker_id,
                                     "reason": redact_text(reason)[:500], "ts": f"{time.time():.3f}"})

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + (self._spill.count if self._spill else 0)

    def _run(self) -> None:
        backoff = 0.2
        while True:
            with self._lock:
                if not self._queue and self._spill is not None and self._spill.count:
                    self._queue.extend(self._spill.take(min(500, self._buffer_size)))
                    self.stats.spilled = self._spill.count
                while not self._queue and not self._stop.is_set():
                    self._lock.wait(0.5)
                if not self._queue and self._stop.is_set():
                    return
                batch = [self._queue[i] for i in range(min(50, len(self._queue)))]
            try:
                pipe = self.client.pipeline(transaction=False)
                for stream, fields in batch:
                    maxlen = self.events_maxlen if stream == self.keys.events else 10_000
                    pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
                pipe.execute()
            except redis.RedisError as exc:
                self.stats.redis_errors += 1
                if self.stats.connected:
                    log.warning("redis unreachable, buffering (%s)", redact_text(exc))
                    self.stats.disconnected_since = time.time()
                self.stats.connected = False
                if self._stop.is_set():  # closing: keep trying until the flush deadline
                    if time.monotonic() > self._deadline:
                        return
                    time.sleep(min(backoff, 0.2))
                else:
                    self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self.stats.connected, self.stats.disconnected_since = True, None
            now = time.time()
            with self._lock:
                for stream, fields in batch:
                    self._queue.popleft()
                    if stream == self.keys.events:
                        self.stats.published_events += 1
                        if self.on_event_written:
                            self.on_event_written(now - float(fields["ts"]))
                    else:
                        self.stats.published_status += 1

    def close(self, timeout_s: float = 5.0) -> bool:
        """Flush what is buffered (up to ``timeout_s``); True when everything was written."""
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout_s + 1)
        flushed = self.pending() == 0
        if self._spill is not None and flushed:
            self._spill.close()
        return flushed
