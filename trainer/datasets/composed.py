"""Several roots as one dataset: identities of different roots never merge.

With more than one root, every identity name is prefixed by its root's name
(``pins-train/alex``), so two roots that both hold a folder ``alex`` give two identities.
Keys are always prefixed by the root's name, so they are unique across roots.
"""

from __future__ import annotations

import numpy as np

from engines.errors import DatasetError
from trainer.datasets.base import FaceDataset


class ComposedDataset(FaceDataset):
    """The items of ``parts`` one after the other, identities kept apart per root."""

    def __init__(self, parts: list[FaceDataset]) -> None:
        if not parts:
            raise DatasetError("no dataset given")
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise DatasetError(f"dataset roots must have distinct names, got {', '.join(names)}")
        self.parts = parts
        self.name = "+".join(names)
        self._offsets = np.cumsum([0] + [len(p) for p in parts])
        prefix = len(parts) > 1
        self.identity_names = [f"{p.name}/{n}" if prefix else n for p in parts for n in p.identity_names]
        first_identity = np.cumsum([0] + [len(p.identity_names) for p in parts])
        self.identity_index = np.concatenate(
            [p.identity_index.astype(np.int32) + np.int32(first)
             for p, first in zip(parts, first_identity, strict=False)]
        )
        self.skipped = [entry for p in parts for entry in p.skipped]

    def locate(self, i: int) -> tuple[FaceDataset, int]:
        """The root holding item ``i`` and the item's position in it."""
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range 0..{len(self) - 1}")
        part = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return self.parts[part], i - int(self._offsets[part])

    def key(self, i: int) -> str:
        part, j = self.locate(i)
        return part.key(j)

    def path(self, i: int) -> str:
        part, j = self.locate(i)
        return part.path(j)

    def stamp(self, i: int) -> str:
        part, j = self.locate(i)
        return part.stamp(j)

    def read_bytes(self, i: int) -> bytes:
        part, j = self.locate(i)
        return part.read_bytes(j)

    def read(self, i: int) -> np.ndarray:
        part, j = self.locate(i)
        return part.read(j)

    def all_keys(self) -> list[str]:
        return [k for p in self.parts for k in p.all_keys()]

    def spec(self) -> dict:
        return {"kind": "composed", "roots": [p.spec() for p in self.parts]}
