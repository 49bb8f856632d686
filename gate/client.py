"""Subscriber API: read best-frame events with a Redis consumer group.

Delivery is at-least-once: read, handle, then ``ack``. Entries a crashed consumer read
but never acknowledged are taken over with :meth:`EventSubscriber.claim_stale`. Use
``event_id`` + ``seq`` to make handling idempotent.

With scale-out, ``drop_stale=True`` drops events from a stale owner: per camera the
subscriber keeps the highest ``owner_epoch`` it has seen, and an event with a lower one
(written late by a worker that had already lost the camera) is acknowledged and counted in
``stale_dropped`` instead of being returned. The highest epochs live in this object: each
consumer process applies the rule to the entries it reads.

    with EventSubscriber("redis://localhost:6379/0", group="recognition", consumer="worker-1") as sub:
        for entry_id, event in sub.read(count=10, block_ms=1000):
            handle(event)
            sub.ack(entry_id)
"""

from __future__ import annotations

import redis

from gate.bus import connect
from gate.schema import DEFAULT_PREFIX, Event, Keys


class EventSubscriber:
    def __init__(self, url: str, group: str = "facegate", consumer: str = "consumer-1",
                 prefix: str = DEFAULT_PREFIX, start: str = "0", client: redis.Redis | None = None,
                 drop_stale: bool = False) -> None:
        self.keys = Keys(prefix)
        self.group, self.consumer = group, consumer
        self.client = client or connect(url)
        self.drop_stale = drop_stale
        self.newest_epoch: dict[str, int] = {}  # per camera, the highest owner_epoch seen
        self.stale_dropped = 0
        try:
            self.client.xgroup_create(self.keys.events, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int = 10, block_ms: int | None = 1000) -> list[tuple[str, Event]]:
        """New entries for this consumer (blocks up to ``block_ms``)."""
        reply = self.client.xreadgroup(self.group, self.consumer, {self.keys.events: ">"}, count=count,
                                       block=block_ms)
        return self._current([(entry_id.decode(), Event.from_fields(fields)) for _, items in reply or []
                              for entry_id, fields in items if fields])

    def _current(self, entries: list[tuple[str, Event]]) -> list[tuple[str, Event]]:
        """Without ``drop_stale``: all of them. With it: those not from a stale owner (the others are acked)."""
        if not self.drop_stale:
            return entries
        kept, stale = [], []
        for entry_id, event in entries:
            newest = self.newest_epoch.get(event.camera, 0)
            if event.owner_epoch < newest:
                stale.append(entry_id)
                continue
            self.newest_epoch[event.camera] = event.owner_epoch
            kept.append((entry_id, event))
        if stale:
            self.stale_dropped += len(stale)
            self.ack(*stale)
        return kept

    def ack(self, *entry_ids: str) -> int:
        return int(self.client.xack(self.keys.events, self.group, *entry_ids)) if entry_ids else 0

    def claim_stale(self, min_idle_ms: int = 30_000, count: int = 100) -> list[tuple[str, Event]]:
        """Take over entries other consumers read but did not ack for ``min_idle_ms``."""
        _, items, *_ = self.client.xautoclaim(self.keys.events, self.group, self.consumer, min_idle_ms,
                                              start_id="0-0", count=count)
        return self._current([(entry_id.decode(), Event.from_fields(fields)) for entry_id, fields in items
                              if fields])

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
