"""Per-image values (embeddings, scores) cached by image content.

One ``.npz`` file per producer (a recogniser, a baseline, a model by its sha256), keyed by
the sha256 of each image file's bytes, so a held-out set is embedded or scored once and
every later evaluation (another candidate model, another report) reuses it. The file format
(arrays ``keys``, ``vectors``, ``failed_keys``, ``reasons``) is the one the evaluation's
embedding cache used before this module, so caches made then stay valid.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def content_keys(paths: Sequence[str | Path]) -> list[str]:
    """sha256 of each file's bytes: what every cached value is keyed by."""
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


class ContentStore:
    """content sha256 → array, kept in one ``.npz`` file; written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, np.ndarray] = {}
        self._failures: dict[str, str] = {}
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    self.values = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
                    if "failed_keys" in data:
                        self._failures = dict(zip(data["failed_keys"].tolist(), data["reasons"].tolist(),
                                                  strict=True))
            except (OSError, ValueError, KeyError):
                self.values, self._failures = {}, {}  # a damaged cache is recomputed, not trusted

    def save(self) -> None:
        """Write atomically, keeping entries another process saved meanwhile (several evaluations may run)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            for key, value in ContentStore(self.path).values.items():
                self.values.setdefault(key, value)
        keys = list(self.values)
        vectors = np.stack([self.values[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(keys, dtype="U64"), vectors=vectors,
                 failed_keys=np.array(list(self._failures), dtype="U64"),
                 reasons=np.array(list(self._failures.values()), dtype="U200"))
        tmp.replace(self.path)

    def get_or_compute(self, keys: Sequence[str], compute: Callable[[np.ndarray], np.ndarray],
                       save_every: int = 0) -> np.ndarray:
        """Values for ``keys``; ``compute(indices)`` fills the missing ones (saved as it goes)."""
        missing = np.array([i for i, k in enumerate(keys) if k not in self.values], dtype=np.int64)
        step = save_every or max(len(missing), 1)
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            for i, value in zip(chunk, compute(chunk), strict=True):
                self.values[keys[i]] = np.asarray(value)
            self.save()
        return np.stack([self.values[k] for k in keys]) if len(keys) else np.zeros((0,), np.float32)


def cached_values(cache: Path, name: str, keys: Sequence[str], compute: Callable[[np.ndarray], np.ndarray],
                  save_every: int = 0) -> np.ndarray:
    """``compute`` for the images not yet in ``<cache>/embeddings/eval-<name>.npz``, the rest from it."""
    return ContentStore(cache / "embeddings" / f"eval-{name}.npz").get_or_compute(keys, compute, save_every)
