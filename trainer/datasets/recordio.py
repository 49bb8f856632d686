"""InsightFace RecordIO (``train.rec`` + ``train.idx`` + ``property``), read without MXNet.

The layout is MXNet's documented one. ``train.idx``: one ``record<TAB>offset`` line per
record. ``train.rec``: each record is a little-endian ``uint32`` magic ``0xced7230a``, a
``uint32`` length word whose top 3 bits are a continuation flag (0 whole, 1 first, 2
middle, 3 last part; MXNet splits a payload where it holds the magic number at a 4-byte
boundary, and the parts are joined with the magic between them) and whose low 29 bits
are the part's length, then the part padded to 4 bytes. A payload starts with the
``IfQQ`` header (flag, label, id, id2); when flag > 0, ``flag`` float32 labels follow and
the first of them is the label; then the encoded image.

InsightFace's record 0 is a header record with flag > 0 whose labels are ``(a, b)``:
records ``1 … a−1`` are images and ``a … b−1`` are identity records whose labels are
the ``[start, end)`` ranges of each identity's image records. When they are there,
identities come from those ranges, each named by the label of its first image record,
and every read checks the image's own label; otherwise every record is an image and
its label is read from its header when the dataset is opened. ``property`` holds
``identities,height,width``.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np

from engines.errors import DatasetError, ImageReadError
from trainer.datasets.base import FaceDataset

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_HEADER = struct.Struct("<IfQQ")
_LENGTH_BITS = 29


class RecordError(ImageReadError):
    """A record of a RecordIO file is damaged (bad magic, cut short, bad header)."""


def _read_index(idx_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(record ids, byte offsets) of ``train.idx``, sorted by record id."""
    try:
        with open(idx_path, "rb") as handle:
            pairs = np.loadtxt(handle, dtype=np.int64, ndmin=2)
    except OSError as exc:
        raise DatasetError(f"cannot read RecordIO index {idx_path}: {exc.strerror or exc}") from None
    except ValueError:
        raise DatasetError(_index_fault(idx_path)) from None
    if pairs.size == 0:
        raise DatasetError(f"RecordIO index {idx_path} lists no records")
    if pairs.shape[1] != 2:
        raise DatasetError(_index_fault(idx_path))
    order = np.argsort(pairs[:, 0], kind="stable")
    return pairs[order, 0], pairs[order, 1]


def _index_fault(idx_path: Path) -> str:
    """Which line of a malformed index is wrong (only run when numpy refused the file)."""
    with open(idx_path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if fields and (len(fields) != 2 or not all(f.isdigit() for f in fields)):
                record = f" (record {fields[0].decode()})" if fields[0].isdigit() else ""
                return (f"RecordIO index {idx_path} is truncated or malformed at line {number}{record}: "
                        f"expected 'record<TAB>offset', got {line.decode(errors='replace').strip()!r}")
    return f"RecordIO index {idx_path} is malformed (expected 'record<TAB>offset' per line)"


class RecordFile:
    """Random access to the records of one ``.rec`` file by byte offset (fork-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = -1
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise DatasetError(f"cannot open RecordIO file {path}: {exc.strerror or exc}") from None
        self.size = stat.st_size
        self.stamp = f"{stat.st_size}:{stat.st_mtime_ns}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def _pread(self, length: int, offset: int) -> bytes:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return os.pread(self._fd, length, offset)

    def payload(self, record: int, offset: int) -> bytes:
        """The record's payload, parts joined; RecordError naming the record if damaged."""
        parts = []
        while True:
            head = self._pread(8, offset)
            if len(head) < 8:
                raise RecordError(f"{self.path.name} record {record} (offset {offset}) is cut short: "
                                  f"the file ends at {self.size} bytes")
            magic, word = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordError(f"{self.path.name} record {record} (offset {offset}) is corrupt: "
                                  f"magic {magic:#010x}, expected {MAGIC:#010x}")
            flag, length = word >> _LENGTH_BITS, word & ((1 << _LENGTH_BITS) - 1)
            data = self._pread(length, offset + 8)
            if len(data) < length:
                raise RecordError(f"{self.path.name} record {record} (offset {offset}) is cut short: "
                                  f"{len(data)} of {length} bytes")
            parts.append(data)
            if flag in (0, 3):
                break
            if flag not in (1, 2) or (flag == 2 and len(parts) == 1):
                raise RecordError(f"{self.path.name} record {record} (offset {offset}) is corrupt: "
                                  f"continuation flag {flag} out of order")
            offset += 8 + ((length + 3) & ~3)
        return _MAGIC_BYTES.join(parts)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def unpack(payload: bytes, where: str) -> tuple[float, int, bytes]:
    """(label, flag, image bytes) of a record payload; RecordError naming ``where``."""
    if len(payload) < _IR_HEADER.size:
        raise RecordError(f"{where} is corrupt: {len(payload)} bytes, shorter than its header")
    flag, label, _id, _id2 = _IR_HEADER.unpack_from(payload)
    body = _IR_HEADER.size
    if flag > 0:
        if len(payload) < body + 4 * flag:
            raise RecordError(f"{where} is corrupt: header announces {flag} labels beyond its end")
        label = struct.unpack_from("<f", payload, body)[0]
        body += 4 * flag
    return float(label), int(flag), payload[body:]


def read_property(folder: Path) -> dict | None:
    """``{"identities", "height", "width"}`` from a ``property`` file, None when there is none."""
    path = folder / "property"
    if not path.is_file():
        return None
    fields = path.read_text().strip().split(",")
    try:
        identities, height, width = (int(x) for x in fields[:3])
    except ValueError:
        raise DatasetError(f"{path} should read 'identities,height,width', not {','.join(fields)!r}") from None
    return {"identities": identities, "height": height, "width": width}


class RecordIODataset(FaceDataset):
    """The image records of an InsightFace ``train.rec`` (see the module docstring)."""

    def __init__(self, path: Path | str, name: str | None = None, progress: bool = False) -> None:
        path = Path(path)
        self.rec_path = path if path.is_file() else path / "train.rec"
        folder = self.rec_path.parent
        self.idx_path = self.rec_path.with_suffix(".idx")
        self.name = name or folder.resolve().name
        self.skipped = []
        self.property = read_property(folder)
        self.file = RecordFile(self.rec_path)
        records, offsets = _read_index(self.idx_path)
        beyond = np.nonzero(offsets + 8 > self.file.size)[0]
        if beyond.size:
            r = int(records[beyond[0]])
            raise DatasetError(f"{self.idx_path.name} gives record {r} offset {int(offsets[beyond[0]])}, beyond the "
                               f"end of {self.rec_path.name} ({self.file.size} bytes): index and file do not match")
        self._all_records, self._all_offsets = records, offsets
        ranges = self._identity_ranges()
        if ranges is not None:
            self._records, labels = self._from_ranges(ranges)
        else:
            self._records, labels = self._scan_labels(records, progress)
        self._offsets = self._offsets_of(self._records)
        self._records_sorted = _sorted(self._records)
        names, self.identity_index = np.unique(labels, return_inverse=True)
        self.identity_index = self.identity_index.astype(np.int32)
        self._labels = names
        self.identity_names = [_label_name(x) for x in names]
        self._check_property(names)

    def _offset(self, record: int) -> int:
        return int(self._offsets_of(np.array([record]))[0])

    def _offsets_of(self, records: np.ndarray) -> np.ndarray:
        where = np.searchsorted(self._all_records, records)
        found = where < len(self._all_records)
        found[found] = self._all_records[where[found]] == records[found]
        if not found.all():
            missing = int(records[~found][0])
            raise DatasetError(f"{self.idx_path.name} has no entry for record {missing} (and "
                               f"{int((~found).sum()) - 1} more): the index is truncated")
        return self._all_offsets[where]

    def _header(self, record: int) -> tuple[float, int, bytes, np.ndarray]:
        payload = self.file.payload(record, self._offset(record))
        label, flag, body = unpack(payload, f"{self.rec_path.name} record {record}")
        labels = np.frombuffer(payload, "<f4", flag, _IR_HEADER.size) if flag > 0 else np.array([label])
        return label, flag, body, labels

    def _identity_ranges(self) -> np.ndarray | None:
        """K×2 ``[start, end)`` image-record ranges from InsightFace's header records, if present."""
        if int(self._all_records[0]) != 0:
            return None
        _label, flag, _body, header = self._header(0)
        if flag < 2:
            return None
        first_identity, end_identity = int(header[0]), int(header[1])
        if not 1 < first_identity <= end_identity:
            raise RecordError(f"{self.rec_path.name} record 0 is corrupt: its image/identity ranges "
                              f"({first_identity}, {end_identity}) are not increasing")
        ranges = np.empty((end_identity - first_identity, 2), np.int64)
        for k, record in enumerate(range(first_identity, end_identity)):
            _label, flag, _body, values = self._header(record)
            if flag < 2:
                raise RecordError(f"{self.rec_path.name} record {record} is corrupt: an identity record "
                                  f"without its [start, end) range")
            ranges[k] = int(values[0]), int(values[1])
        if (ranges[:, 0] < 1).any() or (ranges[:, 1] > first_identity).any() or (ranges[:, 1] <= ranges[:, 0]).any():
            raise RecordError(f"{self.rec_path.name}: identity records {first_identity}..{end_identity - 1} give "
                              f"image ranges outside records 1..{first_identity - 1}")
        return ranges

    def _from_ranges(self, ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes = ranges[:, 1] - ranges[:, 0]
        records = np.concatenate([np.arange(a, b) for a, b in ranges]) if len(ranges) else np.zeros(0, np.int64)
        first_labels = np.array([self._header(int(a))[0] for a in ranges[:, 0]], np.float64)
        self._offsets_of(records)  # every image record must be in the index
        return records, np.repeat(first_labels, sizes)

    def _scan_labels(self, records: np.ndarray, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        from tqdm import tqdm

        labels = np.empty(len(records), np.float64)
        for j in tqdm(range(len(records)), desc=f"{self.name}: record labels", unit="rec", disable=not progress):
            labels[j] = self._header(int(records[j]))[0]
        return records, labels

    def _check_property(self, labels: np.ndarray) -> None:
        if self.property is None:
            return
        count = self.property["identities"]
        if len(labels) > count or (labels.size and (labels.min() < 0 or labels.max() >= count)):
            raise DatasetError(f"{self.rec_path.parent / 'property'} announces {count} identities, but the records "
                               f"hold {len(labels)} with labels {labels.min():g}..{labels.max():g}")
        if len(labels) < count:
            log.warning("%s: property announces %s identities, records hold %s", self.rec_path, count, len(labels))

    @property
    def identity_count(self) -> int:
        """Identities the ``property`` file announces (else those found)."""
        return self.property["identities"] if self.property else len(self.identity_names)

    def key(self, i: int) -> str:
        return f"{self.name}#{int(self._records[i])}"

    def path(self, i: int) -> str:
        return f"{self.rec_path}#{int(self._records[i])}"

    def stamp(self, i: int) -> str:
        return f"{self.file.stamp}@{int(self._offsets[i])}"

    def read_bytes(self, i: int) -> bytes:
        record = int(self._records[i])
        payload = self.file.payload(record, int(self._offsets[i]))
        label, _flag, body = unpack(payload, f"{self.rec_path.name} record {record}")
        if label != self._labels[self.identity_index[i]]:
            raise RecordError(f"{self.rec_path.name} record {record} has label {label:g}, but its identity "
                              f"record gives {self._labels[self.identity_index[i]]:g}")
        return body

    def index_of(self, key: str) -> int:
        name, _, record = key.rpartition("#")
        if name != self.name or not record.isdigit():
            raise KeyError(key)
        where = int(np.searchsorted(self._records, int(record))) if self._records_sorted else -1
        if 0 <= where < len(self._records) and self._records[where] == int(record):
            return where
        return super().index_of(key)

    def spec(self) -> dict:
        return {"kind": "recordio", "path": str(self.rec_path.parent.resolve()), "name": self.name}


def _sorted(values: np.ndarray) -> bool:
    return bool(len(values) < 2 or (values[1:] >= values[:-1]).all())


def _label_name(label: float) -> str:
    return str(int(label)) if float(label).is_integer() else f"{label:g}"
