"""Identity-folder datasets: ``ROOT/<identity>/<image>``, one folder per person."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engines.errors import DatasetError
from engines.imageio import IMAGE_SUFFIXES


@dataclass
class IdentityDataset:
    """Image paths with their identity names, and what was passed over and why."""

    root: Path
    paths: list[Path]
    identities: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.paths)


def scan_identity_folders(root: Path) -> IdentityDataset:
    """List every image under ``root/<identity>/`` (sorted, reproducible)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
    paths: list[Path] = []
    identities: list[str] = []
    skipped: list[tuple[str, str]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                identities.append(folder.name)
            elif not path.name.startswith("."):
                skipped.append((str(path), "not an image file"))
    if not paths:
        raise DatasetError(
            f"dataset folder {root} holds no images in identity sub-folders (expected ROOT/<identity>/<image>)"
        )
    return IdentityDataset(root, paths, identities, skipped)
