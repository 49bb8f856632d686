"""Publishing to Redis Streams with a bounded buffer, so a Redis outage loses nothing.

Events and status entries go into an in-memory queue; one thread writes them with
pipelined XADD (MAXLEN ~ N). When Redis is unreachable the queue holds them (bounded:
beyond it the oldest are counted as dropped) and they are delivered in order after
reconnect. Redelivery after an ambiguous failure is harmless: events carry event_id+seq.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

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


class Bus:
    """Ordered, buffered writer of the event and status streams."""

    def __init__(self, client: redis.Redis, keys: Keys, events_maxlen: int = 10_000, buffer_size: int = 10_000):
        self.client = client
        self.keys = keys
        self.events_maxlen = events_maxlen
        self.stats = BusStats()
        self._queue: deque[tuple[str, dict]] = deque()
        self._buffer_size = buffer_size
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._deadline = float("inf")
        self.on_event_written = None  # callback(seconds from frame time to XADD), for metrics
        self._thread = threading.Thread(target=self._run, name="bus", daemon=True)
        self._thread.start()

    def _put(self, stream: str, fields: dict) -> None:
        with self._lock:
            if len(self._queue) >= self._buffer_size:
                self._queue.popleft()
                self.stats.dropped += 1
            self._queue.append((stream, fields))
            self._lock.notify()

    def publish_event(self, event: Event) -> None:
        self._put(self.keys.events, event.to_fields())

    def publish_status(self, kind: str, name: str, state: str, reason: str = "") -> None:
        self._put(self.keys.status, {"kind": kind, "name": name, "state": state,
                                     "reason": redact_text(reason)[:500], "ts": f"{time.time():.3f}"})

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _run(self) -> None:
        backoff = 0.2
        while True:
            with self._lock:
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
        return self.pending() == 0
