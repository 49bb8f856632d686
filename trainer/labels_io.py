"""``labels.csv`` and ``summary.json``: what ``trainer labels`` writes and training reads back.

``labels.csv`` has one row per usable image: ``key`` (the item's stable name in its
dataset), ``path`` (its file, or ``<file>#<record>`` for a RecordIO record), ``identity``,
``label`` (empty for one-image identities), mean Pos-Sim and Neg-Sim, and the number of
positives. ``summary.json`` records the datasets (``data``), so :func:`open_labelled`
reopens the same images through the dataset interface, whatever their format.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import DatasetError
from trainer.datasets import FaceDataset, open_spec

LABEL_FIELDS = ("key", "path", "identity", "label", "mean_pos_sim", "mean_neg_sim", "n_pos")
REQUIRED_FIELDS = ("path", "identity", "label")  # what older labels files and hand-made subsets hold


def write_labels(target: Path, rows: Iterable[tuple]) -> Path:
    """Write ``labels.csv`` from ``(key, path, identity, label, mean_pos, mean_neg, n_pos)`` rows.

    ``label`` None marks an image without a label (its identity has one image).
    """
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_FIELDS)
        for key, path, identity, label, mean_pos, mean_neg, n_pos in rows:
            if label is None:
                writer.writerow([key, path, identity, "", "", "", 0])
            else:
                writer.writerow([key, path, identity, f"{label:.6f}", f"{mean_pos:.6f}", f"{mean_neg:.6f}", int(n_pos)])
    tmp.replace(target)  # a killed run never leaves a labels file that looks complete
    return target


def _rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DatasetError(f"cannot read labels file {path}: {exc.strerror or exc}") from None
    if not rows or set(REQUIRED_FIELDS) - set(rows[0]):
        raise DatasetError(f"{path} is not a labels file (expected columns {', '.join(LABEL_FIELDS)})")
    return rows


def read_labels(path: Path) -> dict[str, float]:
    """path → label of every labelled row of a ``labels.csv``."""
    return {r["path"]: float(r["label"]) for r in _rows(path) if r["label"]}


@dataclass
class LabelledItems:
    """Labelled images of a ``trainer labels`` run, as positions in its reopened dataset."""

    dataset: FaceDataset
    positions: np.ndarray  # int64, into ``dataset``
    labels: np.ndarray  # float32, 0..100
    keys: list[str]


def open_labelled(labels_dir: Path) -> LabelledItems:
    """Reopen the datasets a ``trainer labels`` run recorded and find its labelled images.

    ``dataset.read(positions[j])`` is the image labelled ``labels[j]``. Raises
    DatasetError when the run recorded no dataset (precomputed embeddings) or when an
    image it labelled is no longer in the dataset.
    """
    labels_dir = Path(labels_dir)
    try:
        summary = json.loads((labels_dir / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {labels_dir / 'summary.json'}: {exc}") from None
    if not summary.get("data"):
        raise DatasetError(f"{labels_dir} was labelled from precomputed embeddings: no dataset to reopen")
    dataset = open_spec(summary["data"])
    rows = [r for r in _rows(labels_dir / "labels.csv") if r["label"]]
    positions = np.empty(len(rows), np.int64)
    for j, row in enumerate(rows):
        try:
            positions[j] = dataset.index_of(row["key"])
        except KeyError:
            raise DatasetError(f"{row['key']} is labelled in {labels_dir} but no longer in the dataset") from None
    labels = np.array([float(r["label"]) for r in rows], np.float32)
    return LabelledItems(dataset, positions, labels, [r["key"] for r in rows])
