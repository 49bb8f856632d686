"""The embedding store: one memory-mapped N×D array on disk, filled shard by shard.

A store is a folder::

    meta.json         n, dim, dtype, shard size, recogniser, the datasets it was made from
    identities.json   identity names; identity.npy holds each row's identity number (int32)
    embeddings.npy    N×D float16 (default) or float32, unit length, in dataset order
    status.npy        per row: 0 not yet embedded, 1 embedded, 2 not usable (reason in its marker)
    digests.npy       per row: sha256 of the image bytes (N×32 uint8), what a later store reuses by
    shards/NNNNNN.json  a shard's completion marker

Rows ``[s·shard_size, (s+1)·shard_size)`` form shard ``s``. A worker writes a shard's
rows, flushes them to disk, then writes the shard's marker atomically (temporary file,
rename); a marker holds the shard's *fingerprint* (its items' keys and cheap stamps).
So after a kill at any point a shard is either marked, and its rows are on disk, or it
is done again; ``meta.json`` is written last when a store is created, so a store killed
while being created is simply created anew. All ``.npy`` files open with
``numpy.load(path, mmap_mode="r")``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engines.errors import DatasetError

STORE_FORMAT = 1
PENDING, EMBEDDED, FAILED = 0, 1, 2
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class StoreMeta:
    """What a store holds and how it was made (``meta.json``)."""

    n: int
    dim: int
    dtype: str
    shard_size: int
    recognizer: str
    fingerprint: str  # of the whole dataset: changes when any item changes
    data: dict | None = None  # FaceDataset.spec() of what was embedded (None: synthetic/precomputed)
    format: int = STORE_FORMAT
    extra: dict = field(default_factory=dict)

    @property
    def shards(self) -> int:
        return -(-self.n // self.shard_size)


def write_json_atomic(path: Path, value: object, indent: int | None = None) -> None:
    """Write JSON so that a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(value, handle, indent=indent)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class EmbeddingStore:
    """An open store; arrays are memory-mapped (``mode`` ``r`` or ``r+``)."""

    def __init__(self, folder: Path, mode: str = "r") -> None:
        self.folder = Path(folder)
        try:
            raw = json.loads((self.folder / "meta.json").read_text())
            self.meta = StoreMeta(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise DatasetError(f"{self.folder} is not an embedding store (meta.json: {exc})") from None
        if self.meta.format != STORE_FORMAT:
            raise DatasetError(f"{self.folder} has store format {self.meta.format}, this version reads {STORE_FORMAT}")
        self.mode = mode
        self.embeddings = self._array("embeddings.npy", (self.meta.n, self.meta.dim), self.meta.dtype)
        self.identity = self._array("identity.npy", (self.meta.n,), "int32")
        self.status = self._array("status.npy", (self.meta.n,), "uint8")
        self.digests = self._array("digests.npy", (self.meta.n, 32), "uint8")

    def _array(self, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        try:
            array = np.load(self.folder / name, mmap_mode=self.mode)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"embedding store {self.folder}: cannot map {name}: {exc}") from None
        if array.shape != shape or array.dtype != np.dtype(dtype):
            raise DatasetError(f"embedding store {self.folder}: {name} is {array.shape} {array.dtype}, "
                               f"meta.json says {shape} {dtype}")
        return array

    @staticmethod
    def create(folder: Path, meta: StoreMeta, identity: np.ndarray, identity_names: list[str]) -> EmbeddingStore:
        """A new, empty store (an existing folder there is replaced)."""
        if meta.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        folder = Path(folder)
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "shards").mkdir(parents=True)
        shapes = {"embeddings.npy": ((meta.n, meta.dim), meta.dtype), "identity.npy": ((meta.n,), "int32"),
                  "status.npy": ((meta.n,), "uint8"), "digests.npy": ((meta.n, 32), "uint8")}
        for name, (shape, dtype) in shapes.items():  # sparse files: no disk written until rows are
            array = np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape)
            if name == "identity.npy":
                array[:] = identity
            array.flush()
            del array
        write_json_atomic(folder / "identities.json", list(identity_names))
        write_json_atomic(folder / "meta.json", asdict(meta))
        return EmbeddingStore(folder, "r+")

    # -- shards ---------------------------------------------------------------------

    def shard_rows(self, shard: int) -> tuple[int, int]:
        start = shard * self.meta.shard_size
        return start, min(self.meta.n, start + self.meta.shard_size)

    def marker_path(self, shard: int) -> Path:
        return self.folder / "shards" / f"{shard:06d}.json"

    def marker(self, shard: int) -> dict | None:
        try:
            return json.loads(self.marker_path(shard).read_text())
        except (OSError, ValueError):
            return None  # absent, or (impossible with atomic writes, but cheap to allow) unreadable

    def shard_done(self, shard: int, fingerprint: str) -> bool:
        marker = self.marker(shard)
        return marker is not None and marker.get("fingerprint") == fingerprint

    def mark_done(self, shard: int, fingerprint: str, failures: list[tuple[int, str]], **info: object) -> None:
        """Flush the shard's rows, then record it as done (atomically)."""
        for array in (self.embeddings, self.status, self.digests):
            array.flush()
        write_json_atomic(self.marker_path(shard), {"shard": shard, "fingerprint": fingerprint,
                                                    "failures": [[int(r), str(m)] for r, m in failures], **info})

    def done_shards(self) -> int:
        return sum(1 for _ in (self.folder / "shards").glob("*.json"))

    def failures(self) -> list[tuple[int, str]]:
        """(row, reason) of every row that could not be embedded, over the marked shards."""
        found = []
        for shard in range(self.meta.shards):
            marker = self.marker(shard)
            found.extend((int(r), m) for r, m in (marker or {}).get("failures", []))
        return sorted(found)

    def identity_names(self) -> list[str]:
        return json.loads((self.folder / "identities.json").read_text())

    @property
    def usable(self) -> np.ndarray:
        """Rows that hold an embedding (bool, N)."""
        return np.asarray(self.status) == EMBEDDED

    def close(self) -> None:
        for name in ("embeddings", "identity", "status", "digests"):
            array = getattr(self, name, None)
            if isinstance(array, np.memmap) and self.mode != "r":
                array.flush()
            setattr(self, name, None)
