"""The camera registry in Redis (a hash) and the control stream that wakes running gates.

The hash ``<prefix>cameras`` maps name → JSON {url, transport} and is the truth; a
control entry only says "look again" (op attach/detach + name). A control message can
do nothing else, and every field read back is size-checked and validated.
"""

from __future__ import annotations

import json
import logging

import redis
from pydantic import ValidationError

from gate.config import CameraConfig
from gate.redact import redact_url
from gate.schema import Keys

log = logging.getLogger(__name__)
MAX_URL_BYTES = 2048
MAX_ENTRY_BYTES = 4096
CONTROL_OPS = ("attach", "detach")


class RegistryError(ValueError):
    """A camera definition is invalid (message free of credentials)."""


def validate_camera(name: str, url: str, transport: str = "tcp") -> CameraConfig:
    if len(url.encode()) > MAX_URL_BYTES:
        raise RegistryError(f"camera URL is longer than {MAX_URL_BYTES} bytes")
    try:
        return CameraConfig(name=name, url=url, transport=transport)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RegistryError(f"camera {first['loc'][0]}: {first['msg']}") from None


class CameraRegistry:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def attach(self, name: str, url: str, transport: str = "tcp") -> CameraConfig:
        camera = validate_camera(name, url, transport)
        self.client.hset(self.keys.cameras, name, json.dumps({"url": url, "transport": transport}))
        self.client.xadd(self.keys.control, {"op": "attach", "name": name}, maxlen=1000, approximate=True)
        return camera

    def detach(self, name: str) -> bool:
        removed = bool(self.client.hdel(self.keys.cameras, name))
        self.client.xadd(self.keys.control, {"op": "detach", "name": name}, maxlen=1000, approximate=True)
        return removed

    def cameras(self) -> dict[str, CameraConfig]:
        """Every valid registered camera; invalid entries are skipped and logged (no secrets)."""
        found: dict[str, CameraConfig] = {}
        for raw_name, raw in self.client.hgetall(self.keys.cameras).items():
            name = raw_name.decode(errors="replace")[:64]
            try:
                if len(raw) > MAX_ENTRY_BYTES:
                    raise RegistryError("registry entry too large")
                entry = json.loads(raw)
                found[name] = validate_camera(name, str(entry["url"]), str(entry.get("transport", "tcp")))
            except (RegistryError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring registry entry %r: %s", name, exc)
        return found

    def wait_for_change(self, last_id: str, block_ms: int) -> str:
        """Block until a control entry arrives (or timeout); return the newest id seen."""
        entries = self.client.xread({self.keys.control: last_id}, block=block_ms, count=100)
        for _, items in entries or []:
            for entry_id, fields in items:
                last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                op = fields.get(b"op", b"")[:16].decode(errors="replace")
                if op not in CONTROL_OPS:
                    log.warning("ignoring control entry %s with op %r", last_id, op)
        return last_id

    def latest_control_id(self) -> str:
        entries = self.client.xrevrange(self.keys.control, count=1)
        return entries[0][0].decode() if entries else "0-0"


def describe(camera: CameraConfig) -> str:
    return f"{camera.name} {redact_url(camera.url)} ({camera.transport})"
