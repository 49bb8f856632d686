"""``/api/events/{entry_id}/face.jpg`` and ``/frame.jpg``: an event's images, as the gate encoded them.

Entries never change, so browsers may keep the images (private cache, a day).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Response

from gate.console.context import ConsoleDep
from gate.console.events import EntryId, read_entry

router = APIRouter(prefix="/api/events", tags=["media"])
CACHE = "private, max-age=86400, immutable"


def _image(console: ConsoleDep, entry_id: str, kind: Literal["face", "frame"]) -> Response:
    fields = read_entry(console, entry_id)
    data = bytes(fields.get(f"{kind}_jpeg".encode(), b"")) if fields else b""
    if not data:
        raise HTTPException(404, f"no {kind} image for {entry_id}")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": CACHE})


@router.get("/{entry_id}/face.jpg", response_class=Response, summary="the aligned 112×112 face crop",
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "gone"}})
def face(entry_id: EntryId, console: ConsoleDep) -> Response:
    return _image(console, entry_id, "face")


@router.get("/{entry_id}/frame.jpg", response_class=Response, summary="the downscaled full frame",
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "gone or over its size cap"}})
def frame(entry_id: EntryId, console: ConsoleDep) -> Response:
    return _image(console, entry_id, "frame")
