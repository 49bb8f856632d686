"""Follows the event and status streams for live pages: one reader thread, many listeners.

One ``XREAD BLOCK`` loop per gate process reads each new entry once, turns it into its
API view (images left out) and hands it to every connected page or script (each has a
bounded queue on the server's event loop). A listener that falls behind is dropped: its
EventSource reconnects with ``Last-Event-ID`` and catches up from the stream. The reader
also keeps the latest event time per camera for the camera list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Literal

import redis

from engines.thresholds import BandLookup
from gate.console.views import Redactor, event_view, status_view
from gate.schema import Keys

log = logging.getLogger(__name__)
SEED_ENTRIES = 100  # recent events read at start, for each camera's last event time
LISTENER_CAPACITY = 256


@dataclass(frozen=True)
class FeedItem:
    kind: Literal["event", "status"]
    entry_id: str
    data: str  # the view as JSON, serialised once for every listener
    camera: str | None = None


class Listener:
    """One connected client: a bounded queue on the server's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[FeedItem | None] = asyncio.Queue(LISTENER_CAPACITY)
        self.lagging = False

    def offer(self, item: FeedItem | None) -> None:
        """Runs on the listener's loop."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.lagging = True  # the client ends once it drained what it has, then reconnects

    async def next(self) -> FeedItem | None:
        if self.lagging and self.queue.empty():
            return None
        return await self.queue.get()


def entry_id_text(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


class EventFeed:
    """The reader thread; ``listen``/``forget`` connect and disconnect clients."""

    def __init__(self, client: redis.Redis, keys: Keys, bands: BandLookup, redactor: Redactor,
                 block_ms: int = 1000) -> None:
        self.client, self.keys, self.bands, self.redactor = client, keys, bands, redactor
        self.block_ms = block_ms
        self.last_event_ts: dict[str, float] = {}
        self._listeners: set[Listener] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop reading and end every listener's stream (so the server can shut down)."""
        self._stop.set()
        with self._lock:
            listeners, self._listeners = set(self._listeners), set()
        for listener in listeners:
            self._send(listener, None)
        self._thread.join(self.block_ms / 1000 + 5)

    def listen(self, loop: asyncio.AbstractEventLoop) -> Listener:
        listener = Listener(loop)
        with self._lock:
            self._listeners.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.discard(listener)

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)

    @staticmethod
    def _send(listener: Listener, item: FeedItem | None) -> None:
        with contextlib.suppress(RuntimeError):  # its loop is closed: the server is gone
            listener.loop.call_soon_threadsafe(listener.offer, item)

    def _broadcast(self, item: FeedItem) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            self._send(listener, item)

    def _start_ids(self) -> dict[str, str]:
        """Where to read from: after the newest entries now (and remember recent event times)."""
        ids = {}
        for key in (self.keys.events, self.keys.status):
            newest = self.client.xrevrange(key, count=SEED_ENTRIES if key == self.keys.events else 1)
            ids[key] = entry_id_text(newest[0][0]) if newest else "0-0"
            if key == self.keys.events:
                for entry_id, fields in reversed(newest):
                    self._note_event(entry_id_text(entry_id), fields)
        return ids

    def _note_event(self, entry_id: str, fields: dict) -> FeedItem | None:
        try:
            view = event_view(entry_id, fields, self.bands)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("skipping event entry %s: not an event (%s)", entry_id, type(exc).__name__)
            return None
        self.last_event_ts[view.camera] = max(view.ts, self.last_event_ts.get(view.camera, 0.0))
        return FeedItem("event", entry_id, view.model_dump_json(), view.camera)

    def _item(self, key: str, entry_id: str, fields: dict) -> FeedItem | None:
        if key == self.keys.events:
            return self._note_event(entry_id, fields)
        try:
            view = status_view(entry_id, fields, self.redactor)
        except ValueError:
            return None
        return FeedItem("status", entry_id, view.model_dump_json(), view.name if view.kind == "camera" else None)

    def _run(self) -> None:
        ids: dict[str, str] | None = None
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if ids is None:
                    ids = self._start_ids()
                reply = self.client.xread(ids, block=self.block_ms, count=100)
            except redis.RedisError as exc:
                log.warning("console feed: redis unreachable (%s); retrying", self.redactor.text(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            for key_raw, entries in reply or []:
                key = entry_id_text(key_raw)
                for entry_id_raw, fields in entries:
                    entry_id = entry_id_text(entry_id_raw)
                    ids[key] = entry_id
                    item = self._item(key, entry_id, fields)
                    if item is not None:
                        self._broadcast(item)
