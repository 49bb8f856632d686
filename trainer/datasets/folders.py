"""Identity folders: ``ROOT/<identity>/<image>``, one folder per person (images may nest)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engines.errors import DatasetError
from engines.imageio import IMAGE_SUFFIXES
from trainer.datasets.base import FileItems


def _walk(folder: str) -> list[os.DirEntry]:
    """Every file under ``folder`` (sorted by relative path, hidden names left out)."""
    found: list[os.DirEntry] = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                found.extend(_walk(entry.path))
            elif entry.is_file():
                found.append(entry)
    return found


class IdentityFolders(FileItems):
    """Images of ``root/<identity>/…``, sorted by identity then relative path (reproducible)."""

    def __init__(self, root: Path | str, name: str | None = None) -> None:
        self.root = self.base = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist or is not a folder")
        self.name = name or self.root.resolve().name
        self.identity_names = []
        self.skipped = []
        files: list[str] = []
        identities: list[int] = []
        sizes: list[int] = []
        mtimes: list[int] = []
        with os.scandir(self.root) as entries:
            folders = sorted((e for e in entries if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name)
        for folder in folders:
            images = []
            for entry in _walk(folder.path):
                if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                    images.append(entry)
                else:
                    self.skipped.append((entry.path, "not an image file"))
            if not images:
                continue
            number = len(self.identity_names)
            self.identity_names.append(folder.name)
            for entry in images:
                stat = entry.stat()
                files.append(os.path.relpath(entry.path, self.root))
                identities.append(number)
                sizes.append(stat.st_size)
                mtimes.append(stat.st_mtime_ns)
        if not files:
            raise DatasetError(
                f"dataset folder {self.root} holds no images in identity sub-folders "
                "(expected ROOT/<identity>/<image>)"
            )
        self._files = files
        self.identity_index = np.asarray(identities, dtype=np.int32)
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._mtimes = np.asarray(mtimes, dtype=np.int64)

    def stamp(self, i: int) -> str:
        return f"{self._sizes[i]}:{self._mtimes[i]}"

    def spec(self) -> dict:
        return {"kind": "folders", "path": str(self.root.resolve()), "name": self.name}
