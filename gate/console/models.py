"""Request and response bodies of the console API (the OpenAPI description is generated from them)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from gate.schema import EVENT_FIELDS, IMAGE_FIELDS, Event


class CameraView(BaseModel):
    name: str
    state: str = Field(description="starting, online, offline, error, ended, acquired, stopped, or 'not running'")
    stale: bool = Field(description="the state was last written more than a few seconds ago (its worker may be "
                        "gone)")
    fps: float | None = Field(description="decoded frames per second")
    decoder: str | None = Field(description="the decoder in use (e.g. software, nvdec) when the gate reports it")
    last_error: str = Field(description="last error, credentials removed")
    worker: str | None = Field(description="the gate worker running it")
    last_event_ts: float | None = Field(description="time of the camera's latest best-frame event seen")
    url: str | None = Field(description="the camera URL without credentials (None when not known here)")
    transport: str | None
    source: Literal["registry", "config", "elsewhere"] = Field(
        description="registry: attached at runtime (detachable); config: this gate's config file; elsewhere: "
        "another worker's config")


class AttachRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="letters, digits, '_', '-', '.' (at most 64)")
    url: str = Field(description="rtsp://, rtsps://, http:// or https:// with a host (credentials allowed)")
    transport: Literal["tcp", "udp"] = "tcp"


class AttachResult(BaseModel):
    name: str
    url: str = Field(description="as stored, credentials removed")
    transport: str


class _EventViewBase(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields a newer gate adds pass through

    entry_id: str = Field(description="the Redis stream entry id (for after=, before= and the image URLs)")


def _event_view_fields() -> dict[str, Any]:
    """The event's fields as :mod:`gate.schema` defines them (types, meanings), the image bytes left out
    (``face_url``/``frame_url`` fetch them), and the band after the quality."""
    types = get_type_hints(Event)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(Event):
        if item.name in IMAGE_FIELDS:
            continue
        default = ... if item.default is dataclasses.MISSING else item.default
        kind = str if get_origin(types[item.name]) is Literal else types[item.name]  # a newer gate's values pass
        fields[item.name] = (kind, Field(default, description=EVENT_FIELDS[item.name]))
        if item.name == "quality":
            fields["band"] = (str | None, Field(description="quality band from the model's threshold table "
                                                "(None: the model or method has none)"))
    fields["face_url"] = (str | None, Field(description="the face crop's JPEG (None: the event has none)"))
    fields["frame_url"] = (str | None, Field(description="the full frame's JPEG (None: the event has none)"))
    return fields


EventView = create_model("EventView", __base__=_EventViewBase, __module__=__name__, **_event_view_fields())
EventView.__doc__ = "One best-frame event without its image bytes (``face_url``/``frame_url`` fetch them)."


class EventPage(BaseModel):
    events: list[EventView] = Field(description="in stream order (oldest first)")
    scanned: int = Field(description="entries read to fill the page (a camera filter reads past other cameras)")


class StatusView(BaseModel):
    entry_id: str
    kind: str
    name: str
    state: str
    worker: str
    reason: str
    ts: float


class BandView(BaseModel):
    name: str
    min_quality: float
    fnmr: float = Field(description="FNMR when faces below min_quality are rejected")
    discarded: float = Field(description="fraction of held-out faces below min_quality")


class GateView(BaseModel):
    worker: str
    model: str = Field(description="what events carry in 'model': name@version, or embedding-norm:<recogniser>")
    method: str = Field(description="quality.method: model or embedding-norm")
    backend: str
    min_quality: float | None = Field(description="bestshot.min_quality of this gate, in the method's units "
                                      "(None: off)")
    recognizer: str | None = Field(description="whose threshold table names the bands")
    fmr: float | None
    bands: list[BandView] = Field(description="best first; empty when the model has no threshold table")
