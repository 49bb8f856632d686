"""``/api/events/stream``: server-sent events for live pages and scripts.

Each new best-frame event is one message (``event: event``, ``id:`` its stream entry id,
``data:`` the same JSON as ``/api/events``); camera and worker status changes are
``event: status`` messages. A client that opens it with ``after=<entry id>`` or reconnects
with ``Last-Event-ID`` first gets the events it missed (up to a page), then the live ones.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse, ServerSentEvent

from gate.config import CAMERA_NAME
from gate.console.context import Console, ConsoleDep
from gate.console.events import ENTRY_ID, MAX_LIMIT, page
from gate.console.feed import Listener

router = APIRouter(prefix="/api/events", tags=["stream"])
PING_S = 15


def _order(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


@router.get("/stream", summary="server-sent events: new best-frame events (event: event), status (event: status)",
            response_class=EventSourceResponse)
async def stream(console: ConsoleDep, camera: Annotated[str | None, Query(pattern=CAMERA_NAME.pattern)] = None,
                 after: Annotated[str | None, Query(pattern=ENTRY_ID, description="start after this entry id "
                                                    "(a page's newest event; 0-0: from the start)")] = None,
                 last_event_id: Annotated[str | None, Header()] = None) -> EventSourceResponse:
    listener = console.feed.listen(asyncio.get_running_loop())  # before the catch-up read: nothing falls between
    # A reconnecting EventSource sends Last-Event-ID; it wins over the after= it was first opened with.
    resume = last_event_id if last_event_id and re.match(ENTRY_ID, last_event_id) else after
    missed = (await run_in_threadpool(page, console, camera, resume, None, MAX_LIMIT)).events if resume else []
    return EventSourceResponse(_messages(console, listener, camera, missed, resume), ping=PING_S,
                               send_timeout=30, headers={"X-Accel-Buffering": "no"})


async def _messages(console: Console, listener: Listener, camera: str | None, missed: list,
                    resume: str | None) -> AsyncIterator[ServerSentEvent]:
    last = _order(resume) if resume else (0, 0)
    try:
        for view in missed:
            last = _order(view.entry_id)
            yield ServerSentEvent(data=view.model_dump_json(), id=view.entry_id, event="event")
        while True:
            item = await listener.next()
            if item is None:  # the server is stopping, or this client fell behind: it reconnects
                return
            if camera is not None and item.camera != camera:
                continue
            if item.kind == "event":
                if _order(item.entry_id) <= last:
                    continue
                last = _order(item.entry_id)
                yield ServerSentEvent(data=item.data, id=item.entry_id, event="event")
            else:
                yield ServerSentEvent(data=item.data, event="status")
    finally:
        console.feed.forget(listener)
