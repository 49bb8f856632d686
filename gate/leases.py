"""Camera ownership across several gate workers sharing one Redis: leases that fence.

Each camera is owned by at most one live worker through a lease: a script sets
``<prefix>lease:<camera>`` to the worker id (``SET NX PX ttl``) and, in the same step,
increments ``<prefix>epoch:<camera>``: the *fencing token* of that ownership, carried by
every event as ``owner_epoch``. A keeper thread renews the held leases (compare-and-expire)
every third of the lease time, whatever the supervisor loop is doing, and gives each one a
local *deadline*: the time the renewal was sent plus 80 % of the lease time, on this
process's monotonic clock. Redis cannot let the lease expire before that (its expiry is
counted from when it processed the renewal, which is later), so a camera that emits only
before its deadline never overlaps the next owner, even when this worker is cut off from
Redis or Redis itself is frozen. A lease found taken or gone is *lost*: its deadline is over
at once.

Workers announce themselves in a sorted set (``<prefix>workers``) scored by Redis's own
clock (``TIME`` inside the script), so hosts whose clocks disagree still agree on who is
live. Each worker aims at an even share of the cameras, takes free ones up to it and gives
back the surplus when a worker joins.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import redis

from gate.redact import redact_text
from gate.schema import Keys

log = logging.getLogger(__name__)
DEADLINE_FRACTION = 0.8  # of the lease time, counted from when a renewal was sent

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""
_RENEW = """
local kept = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    kept[#kept + 1] = i
  end
end
return kept
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_HEARTBEAT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def new_worker_id() -> str:
    """host-pid-random: unique even for containers that share a hostname and all run as PID 1."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Lease:
    """One camera's ownership as this worker holds it; ``valid()`` is the fence."""

    camera: str
    epoch: int  # the fencing token (0: no leases in use, nothing to fence)
    deadline: float = math.inf  # time.monotonic() after which the camera must emit nothing
    lost: bool = False

    def valid(self) -> bool:
        return not self.lost and time.monotonic() < self.deadline

    @staticmethod
    def unfenced(camera: str) -> Lease:
        """For a gate without scale-out: always valid, epoch 0."""
        return Lease(camera, 0)


class LeaseManager:
    """Acquires, renews (on its own thread once :meth:`start` ran) and releases camera leases."""

    def __init__(self, client: redis.Redis, keys: Keys, worker_id: str, ttl_s: float = 10.0) -> None:
        self.client, self.keys, self.worker_id = client, keys, worker_id
        self.ttl_ms = int(ttl_s * 1000)
        self.held: dict[str, Lease] = {}
        self.live: list[str] = [worker_id]  # live workers at the last heartbeat
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._heartbeat = client.register_script(_HEARTBEAT)

    # -- the keeper thread -------------------------------------------------------------
    def start(self) -> None:
        """Heartbeat once now, then renew and heartbeat every third of the lease on a thread."""
        with contextlib.suppress(redis.RedisError):
            self.heartbeat()
        self._thread = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _keep(self) -> None:
        period = self.ttl_ms / 3000
        while not self._stop.wait(period):
            try:
                self.renew_all()
                self.heartbeat()
            except redis.RedisError as exc:  # deadlines lapse by themselves; the cameras fence
                log.warning("cannot renew camera leases: %s", redact_text(exc))
            except Exception:  # never die quietly: log, keep renewing
                log.exception("lease keeper failed one round")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.ttl_ms / 1000 + 6)

    # -- leases ------------------------------------------------------------------------
    def acquire(self, camera: str) -> Lease | None:
        """Take the camera's lease if free; the new lease carries the next fencing token."""
        sent = time.monotonic()
        epoch = int(self._acquire(keys=[self.keys.lease(camera), self.keys.epoch(camera)],
                                  args=[self.worker_id, self.ttl_ms]))
        if not epoch:
            return None
        lease = Lease(camera, epoch, sent + DEADLINE_FRACTION * self.ttl_ms / 1000)
        with self._lock:
            self.held[camera] = lease
        return lease

    def renew_all(self) -> None:
        """Extend every held lease still ours; mark the others lost."""
        with self._lock:
            leases = [lease for lease in self.held.values() if not lease.lost]
        if not leases:
            return
        sent = time.monotonic()
        kept = {int(i) - 1 for i in self._renew(keys=[self.keys.lease(lease.camera) for lease in leases],
                                                args=[self.worker_id, self.ttl_ms])}
        deadline = sent + DEADLINE_FRACTION * self.ttl_ms / 1000
        for i, lease in enumerate(leases):
            if i in kept:
                lease.deadline = max(lease.deadline, deadline)
            elif not lease.lost:
                lease.lost = True
                log.warning("lease of camera %s lost (taken over or expired)", lease.camera)

    def release(self, camera: str) -> None:
        """Give the lease back (only while it is still ours): from now on the camera may emit nothing."""
        with self._lock:
            lease = self.held.pop(camera, None)
        if lease is not None:
            lease.lost = True
        with contextlib.suppress(redis.RedisError):  # otherwise it expires by itself
            self._release(keys=[self.keys.lease(camera)], args=[self.worker_id])

    def forget(self, camera: str) -> None:
        """Stop renewing without releasing: the lease expires by itself (its camera did not stop, or
        it is lost already). Its deadline still holds, so what was queued before can be published."""
        with self._lock:
            self.held.pop(camera, None)

    # -- membership --------------------------------------------------------------------
    def heartbeat(self) -> list[str]:
        """Announce this worker on Redis's clock; return the ids of the live workers, sorted."""
        members = self._heartbeat(keys=[self.keys.workers], args=[self.worker_id, self.ttl_ms])
        self.live = sorted(m.decode() if isinstance(m, bytes) else m for m in members) or [self.worker_id]
        return self.live

    def share(self, cameras: int, live: list[str] | None = None) -> int:
        """This worker's number of cameras: an even split, the remainder to the first workers by id."""
        live = live or self.live
        base, extra = divmod(cameras, len(live))
        rank = live.index(self.worker_id) if self.worker_id in live else len(live)
        return base + (1 if rank < extra else 0)

    def leave(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.zrem(self.keys.workers, self.worker_id)
