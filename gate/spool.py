"""The bus's entries on disk while Redis is away, kept across restarts.

Layout under the spill folder (one folder per gate process, so several processes can share
the spill folder)::

    <start time ns>-<worker id>/lock       flock()ed by its process for as long as it lives
    <start time ns>-<worker id>/cursor     head segment and how far it was delivered
    <start time ns>-<worker id>/<n>.seg    length-prefixed entries, oldest segment first

The bound counts *pending* bytes only: segments are deleted as soon as they are delivered,
and the delivered part of the head segment does not count. A process that starts takes over
("adopts") every folder whose lock it can take: their owners are dead (the kernel drops a
flock with its process). It delivers their entries, oldest folder first, before its own,
and deletes each folder once it is empty. Only one process can hold a folder's lock, so a
folder is adopted by exactly one process at a time; one that dies half-way leaves the cursor
behind for the next (at most the last unacknowledged batch is sent twice; event_id + seq make
that harmless). A write that fails (disk full) is undone: the segment is cut back to its last
whole entry.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
HEADER = struct.Struct(">I")
FIRST_SEGMENT = 1_000_000_000  # own segments count up from here; entries kept at close go just before
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def encode(stream: str, fields: dict) -> bytes:
    """One record: a 4-byte length, then JSON of the stream name and fields (bytes as base64)."""
    body = {k: ("b:" + base64.b64encode(v).decode()) if isinstance(v, bytes) else "s:" + str(v)
            for k, v in fields.items()}
    data = json.dumps([stream, body]).encode()
    return HEADER.pack(len(data)) + data


def decode(data: bytes) -> tuple[str, dict]:
    stream, body = json.loads(data)
    return stream, {k: base64.b64decode(v[2:]) if v.startswith("b:") else v[2:] for k, v in body.items()}


@dataclass
class _Home:
    """One process's folder: our own, or a dead process's that we adopted."""

    path: Path
    lock_fd: int
    own: bool
    segments: int = 0  # of ours still on disk


@dataclass
class _Segment:
    home: _Home
    number: int
    size: int  # bytes of whole entries written
    offset: int = 0  # bytes already delivered
    entries: int = 0  # entries not yet delivered
    fd: int | None = None  # open for appending (own tail only)
    sealed: bool = False  # no more appends (adopted, kept at close, or a torn write could not be undone)
    sizes: deque = field(default_factory=deque)  # record sizes past offset, when known

    @property
    def path(self) -> Path:
        return self.home.path / f"{self.number}.seg"


def _lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if missing), or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # the folder was emptied and removed meanwhile
            raise OSError("lock file replaced")
    except OSError:
        os.close(fd)
        return None
    return fd


class Spool:
    """Ordered entries on disk: adopted ones first, then this process's own. Not thread-safe."""

    def __init__(self, root: Path, owner: str, max_bytes: int, segment_bytes: int = 8 * 2**20) -> None:
        self.root, self.max_bytes, self.segment_bytes = root, max_bytes, segment_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._segments: deque[_Segment] = deque()
        self._peeked: list[tuple[_Segment, int]] = []
        self._closed = False
        for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            self._adopt(path)
        # Our own folder appears under its final name already locked, so no one can adopt it.
        staging = root / f".new-{secrets.token_hex(6)}"
        staging.mkdir(parents=True)  # parents: another process may just have removed an empty root
        fd = _lock(staging / "lock")
        assert fd is not None
        final = root / f"{time.time_ns():020d}-{_SAFE.sub('_', owner)[:80]}"
        staging.rename(final)
        self._home = _Home(final, fd, own=True)
        self._next_number = FIRST_SEGMENT

    # -- adoption ----------------------------------------------------------------------
    def _adopt(self, path: Path) -> None:
        fd = _lock(path / "lock")
        if fd is None:
            return  # its process is alive, or another process is adopting it
        home = _Home(path, fd, own=False)
        cursor = self._read_cursor(path)
        numbers = sorted(int(p.stem) for p in path.glob("*.seg") if p.stem.isdigit())
        for number in numbers:
            segment = _Segment(home, number, 0, sealed=True)
            if cursor and number < cursor[0]:
                segment.path.unlink(missing_ok=True)  # delivered before its owner could delete it
                continue
            segment.offset = cursor[1] if cursor and number == cursor[0] else 0
            self._scan(segment)
            if segment.entries:
                home.segments += 1
                self._segments.append(segment)
            else:
                segment.path.unlink(missing_ok=True)
        if home.segments:
            log.info("replaying %d spilled entries left by %s", sum(s.entries for s in self._segments
                                                                   if s.home is home), path.name)
        else:
            self._remove_home(home)

    @staticmethod
    def _read_cursor(path: Path) -> tuple[int, int] | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads((path / "cursor").read_text())
            return int(data["segment"]), int(data["offset"])
        return None

    @staticmethod
    def _scan(segment: _Segment) -> None:
        """Count the whole entries past the offset; cut off a torn last one."""
        path = segment.path
        end = path.stat().st_size
        position = segment.offset
        with open(path, "rb") as handle:
            handle.seek(position)
            while position + HEADER.size <= end:
                (length,) = HEADER.unpack(handle.read(HEADER.size))
                if position + HEADER.size + length > end:
                    break
                handle.seek(length, os.SEEK_CUR)
                segment.sizes.append(HEADER.size + length)
                position += HEADER.size + length
        segment.size, segment.entries = position, len(segment.sizes)
        if position < end:
            log.warning("spill segment %s ends with a torn entry (%d bytes): cut off", path, end - position)
            with open(path, "r+b") as handle:
                handle.truncate(position)

    # -- state -------------------------------------------------------------------------
    @property
    def pending_entries(self) -> int:
        return sum(s.entries for s in self._segments)

    @property
    def pending_bytes(self) -> int:
        return sum(s.size - s.offset for s in self._segments)

    # -- writing -----------------------------------------------------------------------
    def _new_segment(self, number: int) -> _Segment:
        segment = _Segment(self._home, number, 0)
        segment.fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._home.segments += 1
        return segment

    def _write(self, segment: _Segment, record: bytes) -> None:
        """Append one whole record, or leave the segment as it was and seal it (then raise)."""
        assert segment.fd is not None
        view = memoryview(record)
        try:
            while view:
                view = view[os.write(segment.fd, view):]
        except OSError:
            try:
                os.ftruncate(segment.fd, segment.size)  # back to its last whole entry: usable as before
            except OSError:
                log.error("cannot undo a torn write in %s; it is cut off when replayed", segment.path)
                self._seal(segment)
            raise
        segment.size += len(record)
        segment.entries += 1
        segment.sizes.append(len(record))

    def _seal(self, segment: _Segment) -> None:
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None
        segment.sealed = True

    def append(self, stream: str, fields: dict) -> bool:
        """Add an entry at the end; False when the bound would be exceeded. OSError when the disk refuses."""
        if self._closed:
            raise RuntimeError("spool is closed")
        record = encode(stream, fields)
        if self.pending_bytes + len(record) > self.max_bytes:
            return False
        tail = self._segments[-1] if self._segments else None
        if tail is None or tail.sealed or not tail.home.own or tail.size + len(record) > self.segment_bytes:
            tail = self._new_segment(self._next_number)
            self._next_number += 1
            self._segments.append(tail)
        self._write(tail, record)
        return True

    def prepend(self, entries: list[tuple[str, dict]]) -> int:
        """Write ``entries`` ahead of this process's own segments (they are older); returns how many fit."""
        if not entries:
            return 0
        own = [s.number for s in self._segments if s.home.own]
        segment = self._new_segment(min(own, default=self._next_number) - 1)
        written = 0
        try:
            for stream, fields in entries:
                record = encode(stream, fields)
                if self.pending_bytes + segment.size + len(record) > self.max_bytes:
                    break
                self._write(segment, record)
                written += 1
        except OSError as exc:
            log.error("cannot spill buffered entries (%s)", exc)
        self._seal(segment)
        index = next((i for i, s in enumerate(self._segments) if s.home.own), len(self._segments))
        self._segments.insert(index, segment)
        return written

    # -- reading -----------------------------------------------------------------------
    def peek(self, limit: int) -> list[tuple[str, dict]]:
        """The oldest ``limit`` entries, left in place until :meth:`commit`."""
        out: list[tuple[str, dict]] = []
        self._peeked = []
        if self._closed:
            return out
        for segment in self._segments:
            if len(out) >= limit:
                break
            with open(segment.path, "rb") as handle:
                handle.seek(segment.offset)
                for size in itertools.islice(segment.sizes, limit - len(out)):
                    data = handle.read(size)
                    out.append(decode(data[HEADER.size:]))
                    self._peeked.append((segment, size))
        return out

    def commit(self, count: int) -> None:
        """The first ``count`` peeked entries were delivered: forget them (and delete emptied segments)."""
        if self._closed:
            return
        touched: set[int] = set()
        for segment, size in self._peeked[:count]:
            segment.offset += size
            segment.entries -= 1
            segment.sizes.popleft()
            touched.add(id(segment.home))
        self._peeked = []
        while self._segments and self._segments[0].entries == 0 and (
                self._segments[0].sealed or not self._segments[0].home.own or len(self._segments) > 1):
            self._drop(self._segments.popleft())
        for home in {id(s.home): s.home for s in self._segments}.values():
            if id(home) in touched:
                self._write_cursor(home)

    def _drop(self, segment: _Segment) -> None:
        self._seal(segment)
        segment.path.unlink(missing_ok=True)
        home = segment.home
        home.segments -= 1
        if not home.own and home.segments == 0:
            self._remove_home(home)

    def _write_cursor(self, home: _Home) -> None:
        head = next((s for s in self._segments if s.home is home), None)
        if head is None:
            (home.path / "cursor").unlink(missing_ok=True)
            return
        temporary = home.path / "cursor.tmp"
        temporary.write_text(json.dumps({"segment": head.number, "offset": head.offset}))
        temporary.replace(home.path / "cursor")

    def _remove_home(self, home: _Home) -> None:
        shutil.rmtree(home.path, ignore_errors=True)  # lock file included, while we still hold it
        os.close(home.lock_fd)

    # -- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """Keep what is pending on disk for the next process (cursor written, files synced)."""
        if self._closed:
            return
        self._closed = True
        for segment in [s for s in self._segments if not s.entries]:
            self._segments.remove(segment)
            self._drop(segment)
        homes = {id(s.home): s.home for s in self._segments}
        for segment in self._segments:
            if segment.fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(segment.fd)
            self._seal(segment)
        for home in homes.values():
            with contextlib.suppress(OSError):
                self._write_cursor(home)
            os.close(home.lock_fd)  # the next process adopts what is left
        if id(self._home) not in homes:
            self._remove_home(self._home)
            with contextlib.suppress(OSError):
                self.root.rmdir()  # nothing left by anyone: no empty folder behind (fails if not empty)
