"""Choosing a reader by what a path holds, naming roots, and reopening what a run recorded.

- a folder with ``train.rec`` and ``train.idx`` (or a ``.rec`` file): InsightFace RecordIO;
- a file: a list file, ``path identity`` per line, paths relative to the list's folder;
- a folder of identity folders: ``ROOT/<identity>/<image>``.

A root's name is its folder's name (a list file's: its name without suffix; a ``.rec``
file's: its folder's name). When two roots share a name, parent folder names are put in
front, joined by ``-``, until the names differ: ``/data/pins/train`` and
``/data/seed/train`` are ``pins-train`` and ``seed-train``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engines.errors import DatasetError
from trainer.datasets.base import FaceDataset
from trainer.datasets.composed import ComposedDataset
from trainer.datasets.folders import IdentityFolders

REC_FILE, IDX_FILE = "train.rec", "train.idx"


def dataset_kind(path: Path) -> str:
    """``recordio``, ``list`` or ``folders``, from what ``path`` holds; DatasetError if nothing."""
    if path.is_dir():
        return "recordio" if (path / REC_FILE).is_file() else "folders"
    if path.is_file():
        return "recordio" if path.suffix == ".rec" else "list"
    raise DatasetError(f"dataset {path} does not exist")


def _name_base(path: Path) -> Path:
    if path.is_file():
        return path.parent if path.suffix == ".rec" else path.with_suffix("")
    return path


def root_names(paths: Sequence[Path]) -> list[str]:
    """Distinct, readable names of dataset roots (see the module docstring)."""
    resolved = [Path(p).resolve() for p in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise DatasetError(f"dataset {paths[i]} is given twice")
    parts = [_name_base(p).parts for p in resolved]
    depth = [1] * len(parts)

    def name(i: int) -> str:
        return "-".join(parts[i][-depth[i]:]) if len(parts[i]) > 1 else "root"

    while True:
        names = [name(i) for i in range(len(parts))]
        clashing = [i for i, n in enumerate(names) if names.count(n) > 1]
        grown = [i for i in clashing if depth[i] < len(parts[i]) - 1]
        if not grown:
            return names
        for i in grown:
            depth[i] += 1


def open_dataset(path: Path | str, name: str | None = None) -> FaceDataset:
    """The reader for what ``path`` holds (see the module docstring)."""
    path = Path(path)
    kind = dataset_kind(path)
    name = name or root_names([path])[0]
    if kind == "recordio":
        from trainer.datasets.recordio import RecordIODataset

        return RecordIODataset(path, name)
    if kind == "list":
        from trainer.datasets.listfile import ListFileDataset

        return ListFileDataset(path, name)
    return IdentityFolders(path, name)


def open_datasets(paths: Sequence[Path | str]) -> ComposedDataset:
    """Several roots as one dataset; names prefixed by root when there are several."""
    if not paths:
        raise DatasetError("no dataset given")
    paths = [Path(p) for p in paths]
    for path in paths:
        dataset_kind(path)  # a missing root is reported before any is scanned
    return ComposedDataset([open_dataset(p, n) for p, n in zip(paths, root_names(paths), strict=True)])


def open_spec(spec: dict) -> FaceDataset:
    """Reopen a dataset from its :meth:`FaceDataset.spec` (as ``summary.json`` records it)."""
    if spec.get("kind") == "composed":
        return ComposedDataset([open_spec(root) for root in spec["roots"]])
    if spec.get("kind") == "degraded":
        from trainer.datasets.degraded import COPIES_VERSION, DegradedCopies, DegradeOptions

        if spec.get("version") != COPIES_VERSION:
            raise DatasetError(f"degraded copies of version {spec.get('version')} were recorded; this trainer "
                               f"makes version {COPIES_VERSION}: label the data again")
        return DegradedCopies(open_spec(spec["base"]), DegradeOptions(spec["fraction"], spec["seed"]))
    path = Path(spec["path"])
    if dataset_kind(path) != spec.get("kind"):
        raise DatasetError(f"dataset {path} no longer holds {spec.get('kind')} data")
    return open_dataset(path, spec["name"])
