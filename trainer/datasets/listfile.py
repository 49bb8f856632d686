"""List files: ``path identity`` per line, the form the official SDD-FIQA code reads.

Paths are relative to the list's folder (absolute ones are taken as they are); the
identity is the line's last field (a number or a name), the path everything before it, so
paths with spaces work. Blank lines and lines starting with ``#`` are ignored; a line
without an identity is reported in ``skipped`` with its number.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engines.errors import DatasetError
from trainer.datasets.base import FileItems


class ListFileDataset(FileItems):
    """Items in the order the list gives them; identities numbered by first appearance."""

    def __init__(self, list_path: Path | str, name: str | None = None) -> None:
        self.list_path = Path(list_path)
        self.base = self.list_path.parent
        self.name = name or self.list_path.stem
        self.skipped = []
        try:
            text = self.list_path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise DatasetError(f"cannot read list file {self.list_path}: {reason}") from None
        numbers: dict[str, int] = {}
        files: list[str] = []
        identities: list[int] = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.rsplit(maxsplit=1)
            if len(fields) != 2:
                self.skipped.append((f"{self.list_path}:{line_number}",
                                     "no identity on the line (expected 'path identity')"))
                continue
            path, identity = fields
            files.append(path)
            identities.append(numbers.setdefault(identity, len(numbers)))
        if not files:
            raise DatasetError(f"list file {self.list_path} names no images (expected 'path identity' per line)")
        self.identity_names = list(numbers)
        self.identity_index = np.asarray(identities, dtype=np.int32)
        self._files = files

    def stamp(self, i: int) -> str:
        try:
            stat = os.stat(self.path(i))
        except OSError:
            return "missing"
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def spec(self) -> dict:
        return {"kind": "list", "path": str(self.list_path.resolve()), "name": self.name}
