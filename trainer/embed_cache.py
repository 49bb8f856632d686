"""A small per-content embedding cache: content sha256 → embedding, one ``.npz`` per recogniser.

``trainer evaluate`` keeps its held-out embeddings (several recognisers, a few thousand
crops) here. Training data goes through the embedding store (:mod:`trainer.store`), which
also reuses embeddings by content but scales to millions of images and resumes by shard.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


class EmbeddingCache:
    """content sha256 → embedding (or failure reason), one file per recogniser."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.vectors: dict[str, np.ndarray] = {}
        self.failures: dict[str, str] = {}
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
                    self.failures = dict(zip(data["failed_keys"].tolist(), data["reasons"].tolist(), strict=True))
            except (OSError, ValueError, KeyError):
                self.vectors, self.failures = {}, {}  # a damaged cache is rebuilt, not trusted

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        vectors = np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys, dtype="U64"), vectors=vectors,
                 failed_keys=np.array(list(self.failures), dtype="U64"),
                 reasons=np.array(list(self.failures.values()), dtype="U200"))
        tmp.replace(self.path)


def _content_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
