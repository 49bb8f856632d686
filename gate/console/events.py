"""``/api/events``: recent best-frame events, newest pages or what came after an id, without image bytes.

Redis streams return whole entries, images included; a page therefore reads at most
:data:`MAX_SCAN` entries (in chunks) to fill itself, which bounds what one request
costs when a camera filter skips other cameras' events.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from gate.config import CAMERA_NAME
from gate.console.context import Console, ConsoleDep
from gate.console.feed import entry_id_text
from gate.console.models import EventPage, EventView
from gate.console.views import event_view

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/events", tags=["events"])
ENTRY_ID = r"^\d{1,20}-\d{1,20}$"
MAX_LIMIT = 200
MAX_SCAN = 2000
CHUNK = 100

EntryId = Annotated[str, Path(pattern=ENTRY_ID, description="stream entry id, e.g. 1732800000000-0")]


def read_entry(console: Console, entry_id: str) -> dict | None:
    """The stream entry's fields, or None once trimmed (or never there)."""
    found = console.client.xrange(console.keys.events, entry_id, entry_id, count=1)
    return found[0][1] if found else None


def _views(console: Console, entries: list, camera: str | None) -> list[EventView]:
    views = []
    for raw_id, fields in entries:
        entry_id = entry_id_text(raw_id)
        try:
            view = event_view(entry_id, fields, console.bands)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("skipping event entry %s: not an event (%s)", entry_id, type(exc).__name__)
            continue
        if camera is None or view.camera == camera:
            views.append(view)
    return views


def page(console: Console, camera: str | None, after: str | None, before: str | None, limit: int) -> EventPage:
    """Events strictly between ``after`` and ``before``: the first ``limit`` after ``after`` when it is
    given, else the last ``limit`` before ``before`` (or the newest); always oldest first."""
    key = console.keys.events
    found: list[EventView] = []
    scanned = 0
    low, high = f"({after}" if after else "-", f"({before}" if before else "+"
    while len(found) < limit and scanned < MAX_SCAN:
        if after:
            entries = console.client.xrange(key, low, high, count=CHUNK)
        else:
            entries = console.client.xrevrange(key, high, low, count=CHUNK)
        if not entries:
            break
        scanned += len(entries)
        found += _views(console, entries, camera)
        edge = f"({entry_id_text(entries[-1][0])}"
        low, high = (edge, high) if after else (low, edge)
    found = found[:limit]
    return EventPage(events=found if after else found[::-1], scanned=scanned)


@router.get("", response_model=EventPage, summary="recent events (image URLs instead of bytes)")
def list_events(console: ConsoleDep,
                camera: Annotated[str | None, Query(pattern=CAMERA_NAME.pattern)] = None,
                after: Annotated[str | None, Query(pattern=ENTRY_ID, description="entries after this id")] = None,
                before: Annotated[str | None, Query(pattern=ENTRY_ID, description="entries before this id")] = None,
                limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50) -> EventPage:
    return page(console, camera, after, before, limit)


@router.get("/{entry_id}", response_model=EventView, summary="one event", responses={404: {"description": "gone"}})
def get_event(entry_id: EntryId, console: ConsoleDep) -> EventView:
    fields = read_entry(console, entry_id)
    if fields is None:
        raise HTTPException(404, f"no event {entry_id} (the stream keeps the latest redis.events_maxlen)")
    try:
        return event_view(entry_id, fields, console.bands)
    except (KeyError, ValueError, TypeError):
        raise HTTPException(404, f"entry {entry_id} is not an event") from None
