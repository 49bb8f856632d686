"""Camera ownership across several gate workers sharing one Redis.

Each camera is owned by exactly one live worker through a lease: ``SET <prefix>lease:<camera>
<worker> NX PX ttl`` to take it, a compare-and-expire script to renew it, a
compare-and-delete script to give it back. Workers announce themselves in a sorted set
(``<prefix>workers``, score = last heartbeat); each aims at ``ceil(cameras / live workers)``
cameras, takes free ones up to that share and gives back the surplus when a worker joins.
A worker that dies stops renewing: its leases expire and the others take the cameras over.
A worker that cannot renew (Redis away) stops its cameras before the lease can expire, so
no camera is ever processed by two workers at once.
"""

from __future__ import annotations

import contextlib
import time

import redis

from gate.schema import Keys

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


class LeaseManager:
    def __init__(self, client: redis.Redis, keys: Keys, worker_id: str, ttl_s: float = 10.0) -> None:
        self.client, self.keys, self.worker_id = client, keys, worker_id
        self.ttl_ms = int(ttl_s * 1000)
        self.last_renewed = time.monotonic()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def heartbeat(self) -> list[str]:
        """Announce this worker; return the ids of the live workers (this one included), sorted."""
        now_ms = int(time.time() * 1000)
        key = self.keys.workers
        pipe = self.client.pipeline()
        pipe.zadd(key, {self.worker_id: now_ms})
        pipe.zremrangebyscore(key, 0, now_ms - self.ttl_ms)
        pipe.zrange(key, 0, -1)
        live = sorted(m.decode() if isinstance(m, bytes) else m for m in pipe.execute()[-1])
        return live or [self.worker_id]

    def share(self, cameras: int, live: list[str]) -> int:
        """This worker's number of cameras: an even split, the remainder to the first workers by id."""
        base, extra = divmod(cameras, len(live))
        rank = live.index(self.worker_id) if self.worker_id in live else len(live)
        return base + (1 if rank < extra else 0)

    def acquire(self, camera: str) -> bool:
        return bool(self.client.set(self.keys.lease(camera), self.worker_id, nx=True, px=self.ttl_ms))

    def renew(self, cameras: list[str]) -> set[str]:
        """Renew the leases still ours; return those (the others were lost)."""
        if not cameras:
            self.last_renewed = time.monotonic()
            return set()
        kept = self._renew(keys=[self.keys.lease(c) for c in cameras], args=[self.worker_id, self.ttl_ms])
        self.last_renewed = time.monotonic()
        return {cameras[int(i) - 1] for i in kept}

    def release(self, camera: str) -> None:
        with contextlib.suppress(redis.RedisError):  # otherwise it expires by itself
            self._release(keys=[self.keys.lease(camera)], args=[self.worker_id])

    def leave(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.zrem(self.keys.workers, self.worker_id)

    def must_stop_all(self) -> bool:
        """True when renewals failed for long enough that a lease may soon expire."""
        return time.monotonic() - self.last_renewed > 0.6 * self.ttl_ms / 1000
