"""The Redis contract, defined once: key names, event and status fields, encoding.

Streams carry flat string fields (Redis stream entries are field → bytes maps); numbers
are decimal strings, boxes and landmarks JSON arrays, images JPEG bytes. Documented in
the README (generated from :data:`EVENT_FIELDS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

EventType = Literal["new", "update", "end"]

# field → meaning (the README's event table is this dict).
EVENT_FIELDS: dict[str, str] = {
    "type": "new, update or end",
    "event_id": "stable per track: the same id on new, update and end (idempotency key)",
    "camera": "camera name",
    "track": "track number, unique per camera within one gate process (a restarted process counts from 1 "
             "again; event_id is the key)",
    "seq": "1, 2, 3 … per event_id",
    "ts": "time of the best frame (seconds since epoch, camera clock)",
    "start_ts": "first time the track was seen",
    "end_ts": "last time the track was matched (end events; else empty)",
    "bbox": "[x1, y1, x2, y2] of the face in source pixels (JSON)",
    "landmarks": "[[x, y] × 5] in source pixels, ArcFace order (JSON)",
    "det_score": "detector confidence 0..1",
    "quality": "quality of the best frame in quality.method's units: the SDD-FIQA model's 0..100, or SFace's "
               "embedding norm (about 2.5 to 15)",
    "model": "what scored it: quality model name@version, or embedding-norm:<recogniser>@<version>",
    "frame_w": "source frame width in pixels",
    "frame_h": "source frame height in pixels",
    "face_jpeg": "aligned 112×112 face crop, JPEG bytes",
    "frame_jpeg": "downscaled full frame, JPEG bytes (may be empty when over its size cap)",
    "owner_epoch": "fencing token of the camera's owner (scale-out: taken at each lease acquisition, always "
                   "higher for a later owner; 0 without scale-out)",
    "below_min_quality": "1 on the end of a track whose best never reached bestshot.min_quality (it had no new), "
                         "else 0",
}

IMAGE_FIELDS = frozenset({"face_jpeg", "frame_jpeg"})  # the event fields that hold JPEG bytes, not text

STATUS_FIELDS: dict[str, str] = {
    "kind": "camera or worker",
    "name": "camera name or worker id",
    "state": "cameras: online, offline, ended, error, stopped, acquired; workers: started, stopped, overflow, "
             "failed",
    "worker": "id of the gate worker that wrote the entry (host-pid-random)",
    "reason": "why (credentials removed)",
    "ts": "seconds since epoch",
}


DEFAULT_PREFIX = "facegate:"


@dataclass(frozen=True)
class Keys:
    """Redis key names under one prefix, so deployments can share a Redis."""

    prefix: str = DEFAULT_PREFIX

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def status(self) -> str:
        return f"{self.prefix}status"

    @property
    def cameras(self) -> str:
        return f"{self.prefix}cameras"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def camera_state(self) -> str:
        return f"{self.prefix}camera_state"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    def lease(self, camera: str) -> str:
        return f"{self.prefix}lease:{camera}"

    def epoch(self, camera: str) -> str:
        return f"{self.prefix}epoch:{camera}"


@dataclass
class Event:
    """One best-frame event as published."""

    type: EventType
    event_id: str
    camera: str
    track: int
    seq: int
    ts: float
    start_ts: float
    end_ts: float | None
    bbox: list[float]
    landmarks: list[list[float]]
    det_score: float
    quality: float
    model: str
    frame_w: int
    frame_h: int
    face_jpeg: bytes
    frame_jpeg: bytes
    owner_epoch: int = 0
    below_min_quality: bool = False

    def to_fields(self) -> dict[str, bytes | str]:
        return {
            "type": self.type, "event_id": self.event_id, "camera": self.camera, "track": str(self.track),
            "seq": str(self.seq), "ts": f"{self.ts:.6f}", "start_ts": f"{self.start_ts:.6f}",
            "end_ts": "" if self.end_ts is None else f"{self.end_ts:.6f}",
            "bbox": json.dumps([round(v, 1) for v in self.bbox]),
            "landmarks": json.dumps([[round(x, 1), round(y, 1)] for x, y in self.landmarks]),
            "det_score": f"{self.det_score:.4f}", "quality": f"{self.quality:.3f}", "model": self.model,
            "frame_w": str(self.frame_w), "frame_h": str(self.frame_h),
            "face_jpeg": self.face_jpeg, "frame_jpeg": self.frame_jpeg, "owner_epoch": str(self.owner_epoch),
            "below_min_quality": "1" if self.below_min_quality else "0",
        }

    @staticmethod
    def from_fields(fields: dict[bytes | str, bytes]) -> Event:
        f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

        def text(name: str) -> str:
            value = f[name]
            return value.decode() if isinstance(value, bytes) else value

        return Event(
            type=text("type"), event_id=text("event_id"), camera=text("camera"), track=int(text("track")),
            seq=int(text("seq")), ts=float(text("ts")), start_ts=float(text("start_ts")),
            end_ts=float(text("end_ts")) if text("end_ts") else None, bbox=json.loads(text("bbox")),
            landmarks=json.loads(text("landmarks")), det_score=float(text("det_score")),
            quality=float(text("quality")), model=text("model"), frame_w=int(text("frame_w")),
            frame_h=int(text("frame_h")), face_jpeg=bytes(f["face_jpeg"]), frame_jpeg=bytes(f["frame_jpeg"]),
            owner_epoch=int(text("owner_epoch")) if "owner_epoch" in f else 0,
            below_min_quality=f.get("below_min_quality") in (b"1", "1"),  # absent in entries of older gates
        )
