"""What the console says about cameras, events and status: built here, and only here.

Every text that leaves the process through the API passes a :class:`Redactor`: URLs lose
their credentials (:mod:`gate.redact`) and any secret the process knows (the HTTP token,
the Redis password, camera passwords) is replaced wherever it appears, even outside a URL.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from engines.thresholds import BandLookup
from gate.config import CameraConfig
from gate.console.models import AttachResult, CameraView, EventView, StatusView
from gate.redact import redact_text, redact_url
from gate.schema import IMAGE_FIELDS, Event

STALE_AFTER_S = 10.0  # a gate writes its cameras' states every second or so
MASK = "***"


class Redactor:
    """Removes credentials from URLs and every known secret from text."""

    def __init__(self, *secrets: str | None) -> None:
        # Replaced, never changed in place: API threads learn while the feed thread redacts.
        self._secrets: frozenset[str] = frozenset(s for s in secrets if s)

    def learn_url(self, url: str) -> None:
        """Remember the password inside a camera URL, so it is removed even where no URL surrounds it."""
        try:
            password = urlsplit(url).password
        except ValueError:
            return
        if password and len(password) >= 4 and password not in self._secrets:  # shorter ones match ordinary text
            self._secrets = self._secrets | {password}

    def text(self, value: object) -> str:
        out = redact_text(str(value))
        for secret in sorted(self._secrets, key=len, reverse=True):
            out = out.replace(secret, MASK)
        return out

    def url(self, url: str) -> str:
        self.learn_url(url)
        return self.text(redact_url(url))


def _text(fields: dict, name: str) -> str:
    value = fields.get(name.encode(), fields.get(name, b""))
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def camera_view(name: str, redactor: Redactor, registered: CameraConfig | None, configured: CameraConfig | None,
                state: dict | None, last_event_ts: float | None, now: float) -> CameraView:
    camera = registered or configured
    state = state or {}
    written = state.get("ts")
    return CameraView(
        name=name, state=str(state.get("state", "not running")),
        stale=bool(state) and (written is None or now - float(written) > STALE_AFTER_S),
        fps=state.get("fps"), decoder=state.get("decoder"), last_error=redactor.text(state.get("last_error") or ""),
        worker=state.get("worker"), last_event_ts=last_event_ts,
        url=redactor.url(camera.url) if camera else None, transport=camera.transport if camera else None,
        source="registry" if registered else "config" if configured else "elsewhere")


def attach_result(camera: CameraConfig, redactor: Redactor) -> AttachResult:
    return AttachResult(name=camera.name, url=redactor.url(camera.url), transport=camera.transport)


def event_view(entry_id: str, fields: dict, bands: BandLookup) -> EventView:
    """An event entry (parsed by the schema's own reader) without its image bytes.

    Fields the schema does not know yet (written by a newer gate) pass through as text.
    Raises KeyError/ValueError on an entry that is not an event.
    """
    event = Event.from_fields(fields)
    known = {f.name for f in dataclasses.fields(Event)}
    values = {name: getattr(event, name) for name in known - IMAGE_FIELDS}
    names = (k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in fields)
    extra = {name: _text(fields, name) for name in names if name not in known and name not in EventView.model_fields}
    return EventView(entry_id=entry_id, band=bands.name(event.model, event.quality),
                     face_url=f"/api/events/{entry_id}/face.jpg" if event.face_jpeg else None,
                     frame_url=f"/api/events/{entry_id}/frame.jpg" if event.frame_jpeg else None, **values, **extra)


def status_view(entry_id: str, fields: dict, redactor: Redactor) -> StatusView:
    ts = _text(fields, "ts")
    return StatusView(entry_id=entry_id, kind=_text(fields, "kind"), name=_text(fields, "name"),
                      state=_text(fields, "state"), worker=_text(fields, "worker"),
                      reason=redactor.text(_text(fields, "reason")), ts=float(ts) if ts else 0.0)
