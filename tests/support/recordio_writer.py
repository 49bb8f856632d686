"""A RecordIO writer for tests, written from MXNet's documented layout (not from the reader).

Each record: little-endian uint32 magic 0xced7230a, uint32 length word (top 3 bits: the
continuation flag, low 29: the part's length), the part, zero padding to 4 bytes. A
payload holding the magic number at a 4-byte boundary is split there into parts flagged
1 (first), 2 (middle) and 3 (last), the magic itself left out (dmlc-core's writer does
this so a reader can resynchronise). Payload: struct ``IfQQ`` (flag, label, id, id2),
then ``flag`` float32 labels when flag > 0, then the encoded image. ``train.idx`` holds
``record<TAB>offset`` lines. InsightFace layout: record 0 is a header (flag 2, labels
``[first identity record, end of identity records]``), records 1..N are images grouped by
identity, then one record per identity (flag 2, labels ``[start, end)`` of its images).
"""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = 0xCED7230A


def pack(label: float | list[float], image: bytes = b"", record_id: int = 0) -> bytes:
    """A payload: header, extra labels when ``label`` is a list, then the image bytes."""
    if isinstance(label, list):
        return struct.pack("<IfQQ", len(label), 0.0, record_id, 0) + struct.pack(f"<{len(label)}f", *label) + image
    return struct.pack("<IfQQ", 0, float(label), record_id, 0) + image


def _word(flag: int, length: int) -> bytes:
    return struct.pack("<II", MAGIC, (flag << 29) | length)


def encode_record(payload: bytes) -> bytes:
    """One record as it lies in a ``.rec`` file (split where the payload holds the magic)."""
    magic = struct.pack("<I", MAGIC)
    out = bytearray()
    start = 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i : i + 4] == magic:
            out += _word(1 if start == 0 else 2, i - start) + payload[start:i]
            start = i + 4
    tail = payload[start:]
    out += _word(3 if start else 0, len(tail)) + tail + b"\0" * (-len(tail) % 4)
    return bytes(out)


def write_records(folder: Path, payloads: dict[int, bytes]) -> dict[int, int]:
    """Write ``train.rec`` and ``train.idx`` (records in key order); returns record → offset."""
    folder.mkdir(parents=True, exist_ok=True)
    offsets = {}
    with open(folder / "train.rec", "wb") as rec:
        for record in sorted(payloads):
            offsets[record] = rec.tell()
            rec.write(encode_record(payloads[record]))
    (folder / "train.idx").write_text("".join(f"{r}\t{o}\n" for r, o in offsets.items()))
    return offsets


def write_insightface(folder: Path, items: list[tuple[int, bytes]], size: int = 112,
                      identities: int | None = None, extra_labels: dict[int, list[float]] | None = None
                      ) -> dict[int, int]:
    """An InsightFace dataset of ``(identity label, encoded image)`` grouped by identity.

    ``extra_labels``: image index → labels written as a flag > 0 label array instead
    (the first entry must be the identity). Writes ``property``; returns record → offset.
    """
    labels = sorted({label for label, _ in items})
    payloads: dict[int, bytes] = {}
    ranges = []
    record = 1
    for label in labels:
        start = record
        for n, (item_label, image) in enumerate(items):
            if item_label == label:
                extra = (extra_labels or {}).get(n)
                payloads[record] = pack(extra if extra is not None else float(label), image, record)
                record += 1
        ranges.append((start, record))
    first_identity = record
    for start, end in ranges:
        payloads[record] = pack([float(start), float(end)], b"", record)
        record += 1
    payloads[0] = pack([float(first_identity), float(record)])
    offsets = write_records(folder, payloads)
    count = identities if identities is not None else len(labels)
    (folder / "property").write_text(f"{count},{size},{size}\n")
    return offsets
