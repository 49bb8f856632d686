"""The dataset interface every reader implements: items with identities, read on demand.

An *item* is one face image. Readers differ in where items live (a file per image, a line
of a list file, a record of a RecordIO file); everything downstream (embedding, labels,
training) sees only this interface, so it never needs to know the format. Items are
addressed by position ``0 … len − 1`` and named by a *key*, a stable string unique across
all roots of a run (``<root>/<identity>/<file>`` or ``<root>#<record>``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from engines.errors import ImageReadError


class FaceDataset(ABC):
    """Face images with identity labels, read one at a time.

    ``identity_names[identity_index[i]]`` is the identity of item ``i``; ``skipped``
    lists ``(where, reason)`` of what the reader passed over while opening (files that
    are not images, list lines naming nothing). One-image identities are kept: they serve
    as negatives.
    """

    name: str
    identity_names: list[str]
    identity_index: np.ndarray  # int32, one entry per item
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return int(self.identity_index.shape[0])

    @abstractmethod
    def key(self, i: int) -> str:
        """Stable name of item ``i``, unique across the roots of a run."""

    @abstractmethod
    def read_bytes(self, i: int) -> bytes:
        """The item's encoded image (JPEG, PNG, …); ImageReadError naming the item."""

    @abstractmethod
    def stamp(self, i: int) -> str:
        """Cheap fingerprint that changes when the item's bytes change (no image read)."""

    @abstractmethod
    def spec(self) -> dict:
        """What reopens this dataset: ``{"kind", "path", "name"}`` (JSON-serialisable)."""

    def path(self, i: int) -> str:
        """Where the item lives: a file path for file items, ``<file>#<record>`` otherwise."""
        return self.key(i)

    def identity(self, i: int) -> str:
        return self.identity_names[int(self.identity_index[i])]

    def read(self, i: int) -> np.ndarray:
        """Item ``i`` decoded to BGR uint8 (grey expanded, alpha dropped)."""
        return decode_image(self.read_bytes(i), self.path(i))

    def content_key(self, i: int) -> str:
        """sha256 of the item's bytes: what embeddings are reused by when a dataset changes."""
        return hashlib.sha256(self.read_bytes(i)).hexdigest()

    def all_keys(self) -> list[str]:
        return [self.key(i) for i in range(len(self))]

    def index_of(self, key: str) -> int:
        """Position of the item named ``key`` (KeyError if there is none)."""
        lookup = getattr(self, "_key_index", None)
        if lookup is None:
            lookup = {k: i for i, k in enumerate(self.all_keys())}
            self._key_index = lookup
        return lookup[key]


class FileItems(FaceDataset):
    """Items that are image files under ``base``, named by their path relative to it.

    What identity folders and list files share; they differ in how they find the files.
    """

    base: Path
    _files: list[str]  # relative to base (an absolute path stays absolute)

    def key(self, i: int) -> str:
        return f"{self.name}/{self._files[i]}"

    def path(self, i: int) -> str:
        return str(self.base / self._files[i])

    def read_bytes(self, i: int) -> bytes:
        try:
            return Path(self.path(i)).read_bytes()
        except OSError as exc:
            raise ImageReadError(f"cannot read image {self.path(i)}: {exc.strerror or exc}") from None


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded bytes → BGR uint8; ImageReadError naming ``where`` when they are not an image."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise ImageReadError(f"cannot decode image {where}: not an image or corrupt")
    return image
