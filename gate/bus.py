"""Publishing to Redis Streams with a bounded buffer, so a Redis outage or a restart loses nothing.

Events and status entries go into an in-memory queue (bounded in entries and in bytes); one
thread writes them with pipelined XADD (MAXLEN ~ N). While Redis is unreachable the queue
holds them; beyond its bounds they go to the spill folder (:mod:`gate.spool`, bounded in
pending bytes; beyond that they are counted as dropped), and once anything is on disk new
entries follow it there, so delivery stays in order: memory first, then disk. ``close()``
with Redis still away writes what is in memory to the spill folder ahead of what is already
there, and the next gate process on that folder delivers all of it before its own entries.
Redelivery after an ambiguous failure is harmless: events carry event_id + seq.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import redis

from gate.redact import redact_text
from gate.schema import Event, Keys
from gate.spool import Spool

log = logging.getLogger(__name__)
BATCH = 50  # entries per pipelined write
ERROR_LOG_INTERVAL_S = 10.0
REDIS_TIMEOUT_S = 5.0  # connect and socket timeout of the gate's Redis calls


def connect(url: str, ssl_ca_certs: str | None = None, ssl_certfile: str | None = None,
            ssl_keyfile: str | None = None) -> redis.Redis:
    """A redis-py client for ``url`` (redis:// or rediss://), short timeouts, no decoding."""
    kwargs: dict = {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S,
                    "health_check_interval": 15}
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
    spill_errors: int = 0  # writes the disk refused (each entry is also counted as dropped)
    connected: bool = True
    disconnected_since: float | None = None
    spilled: int = 0  # entries waiting in the spill folder


def entry_bytes(fields: dict) -> int:
    """What an entry costs in memory, roughly: its field names and values."""
    return sum(len(k) + (len(v) if isinstance(v, bytes | str) else 8) for k, v in fields.items())


class Bus:
    """Ordered, buffered writer of the event and status streams."""

    def __init__(self, client: redis.Redis, keys: Keys, events_maxlen: int = 10_000, buffer_size: int = 10_000,
                 spill_dir: Path | None = None, spill_max_bytes: int = 512 * 2**20, worker_id: str = "",
                 buffer_max_bytes: int = 256 * 2**20):
        self.client = client
        self.worker_id = worker_id
        self.keys = keys
        self.events_maxlen = events_maxlen
        self.stats = BusStats()
        self._queue: deque[tuple[str, dict, int]] = deque()  # stream, fields, bytes
        self.buffered_bytes = 0
        self._buffer_size, self._buffer_max_bytes = buffer_size, buffer_max_bytes
        self._spill_dir, self._spill_max_bytes = spill_dir, spill_max_bytes
        self._spool = Spool(spill_dir, worker_id or f"bus-{os.getpid()}", spill_max_bytes) if spill_dir else None
        self.stats.spilled = self._spool.pending_entries if self._spool else 0
        self._accepted = self.stats.spilled  # entries taken in (adopted ones included) …
        self._resolved = 0  # … and those written or dropped since: flush() waits on these
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._closed = False
        self._deadline = float("inf")
        self._last_error_log = float("-inf")
        self.failure: str | None = None  # why the writer thread died, if it did
        self.on_event_written = None  # callback(seconds from frame time to XADD), for metrics
        self._thread = threading.Thread(target=self._run, name="bus", daemon=True)
        self._thread.start()

    # -- taking entries in -------------------------------------------------------------
    def _memory_full(self, size: int) -> bool:
        return len(self._queue) >= self._buffer_size or (
            bool(self._queue) and self.buffered_bytes + size > self._buffer_max_bytes)

    def _put(self, stream: str, fields: dict) -> None:
        size = entry_bytes(fields)
        with self._lock:
            if self._closed:
                self._late(stream, fields)
            elif self._spool is not None and (self._spool.pending_entries or self._memory_full(size)):
                self._to_disk(stream, fields)
            else:
                while self._memory_full(size):  # no spill folder: the oldest entries give way
                    _, _, dropped_size = self._queue.popleft()
                    self.buffered_bytes -= dropped_size
                    self.stats.dropped += 1
                    self._resolved += 1
                self._queue.append((stream, fields, size))
                self.buffered_bytes += size
                self._accepted += 1
            self._lock.notify_all()

    def _to_disk(self, stream: str, fields: dict) -> None:
        assert self._spool is not None
        try:
            if self._spool.append(stream, fields):
                self._accepted += 1
            else:
                self.stats.dropped += 1  # memory and spill folder both full: counted, reported
        except OSError as exc:
            self.stats.dropped += 1
            self.stats.spill_errors += 1
            now = time.monotonic()
            if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
                self._last_error_log = now
                log.error("cannot write to the spill folder (%s): entry dropped (%d so far)", exc,
                          self.stats.spill_errors)
        self.stats.spilled = self._spool.pending_entries

    def _late(self, stream: str, fields: dict) -> None:
        """An entry after close(): a bug in the caller's shutdown order. Kept on disk when possible."""
        if self._spill_dir is not None:
            try:
                spool = Spool(self._spill_dir, f"{self.worker_id or os.getpid()}-late", self._spill_max_bytes)
                kept = spool.append(stream, fields)
                spool.close()
            except OSError:
                kept = False
            if kept:
                log.error("%s entry put after close of the bus: kept in the spill folder for the next gate "
                          "process", stream)
                return
        self.stats.dropped += 1
        log.error("%s entry put after close of the bus: dropped", stream)

    def publish_event(self, event: Event) -> None:
        self._put(self.keys.events, event.to_fields())

    def publish_status(self, kind: str, name: str, state: str, reason: str = "") -> None:
        self._put(self.keys.status, {"kind": kind, "name": name, "state": state, "worker": self.worker_id,
                                     "reason": redact_text(reason)[:500], "ts": f"{time.time():.3f}"})

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + (self._spool.pending_entries if self._spool else 0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the writer thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # never quietly: health reports it, the gate exits non-zero
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the bus thread failed")
            raise

    def _next_batch(self) -> tuple[list[tuple[str, dict, int]] | None, list[tuple[str, dict]] | None]:
        """Wait for work; the oldest entries (memory first, then disk), or (None, None) to stop."""
        with self._lock:
            while not self._queue and not (self._spool and self._spool.pending_entries) and not self._stop.is_set():
                self._lock.wait(0.5)
            if self._closed:  # close() gave up waiting: what is left is on disk for the next process
                return None, None
            if self._queue:
                return [self._queue[i] for i in range(min(BATCH, len(self._queue)))], None
            if self._spool is not None and self._spool.pending_entries:
                return None, self._spool.peek(BATCH)
            return None, None

    def _loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                memory, disk = self._next_batch()
            except OSError as exc:  # the spill folder cannot be read right now: retry later
                log.error("cannot read the spill folder: %s", exc)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
                continue
            if memory is None and disk is None:
                return
            batch = [(stream, fields) for stream, fields, _ in memory] if memory is not None else disk or []
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
            self._written(memory, len(batch))
            self._observe(batch)

    def _written(self, memory: list[tuple[str, dict, int]] | None, count: int) -> None:
        with self._lock:
            if memory is not None:
                for item in memory:
                    if self._queue and self._queue[0] is item:
                        self._queue.popleft()
                        self.buffered_bytes -= item[2]
            elif self._spool is not None:
                try:
                    self._spool.commit(count)
                except OSError as exc:  # the entries were delivered; the disk may send them again
                    log.error("cannot update the spill folder after delivery: %s", exc)
                self.stats.spilled = self._spool.pending_entries
            self._resolved += count
            self._lock.notify_all()

    def _observe(self, batch: list[tuple[str, dict]]) -> None:
        now = time.time()
        for stream, fields in batch:
            if stream != self.keys.events:
                self.stats.published_status += 1
                continue
            self.stats.published_events += 1
            if self.on_event_written:
                try:
                    self.on_event_written(now - float(fields["ts"]))
                except Exception:  # metrics must never stop delivery
                    log.exception("event metrics callback failed")

    # -- flushing and closing ----------------------------------------------------------
    def flush(self, timeout_s: float) -> bool:
        """Wait until everything put so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            target = self._accepted
            while self._resolved < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._lock.wait(min(remaining, 0.5))
            return True

    def close(self, timeout_s: float = 5.0) -> bool:
        """Flush (up to ``timeout_s``); what is left stays in the spill folder. True when all was written."""
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout_s + 1)
        with self._lock:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self.buffered_bytes = 0
            flushed = not left and not (self._spool and self._spool.pending_entries)
            if self._spool is not None:
                kept = self._spool.prepend([(stream, fields) for stream, fields, _ in left])
                self.stats.dropped += len(left) - kept
                if kept < len(left):  # no status entry can tell anyone any more: the log must
                    log.error("redis unreachable at close: %d entries could not be kept in the spill folder %s "
                              "(its bound is reached or the disk refused them): lost", len(left) - kept,
                              self._spill_dir)
                if not flushed:
                    log.warning("redis unreachable at close: %d entries kept in the spill folder %s for the next "
                                "gate process", self._spool.pending_entries, self._spill_dir)
                self._spool.close()
            elif left:
                self.stats.dropped += len(left)
                log.error("redis unreachable at close and no spill folder: %d entries lost", len(left))
        return flushed
