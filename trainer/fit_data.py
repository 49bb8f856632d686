"""What a training step reads: labelled images, or their cached features, and per-sample randomness.

Randomness is a function of (seed, epoch, sample): a sample gets the same horizontal flip
and the same dropout mask whichever process, batch or position it lands in. That is what
makes a run on N processes match a one-process run with the same global batch, and a
resumed run match an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from engines.errors import DatasetError
from trainer.datasets import FaceDataset
from trainer.labels_io import open_labelled, read_labels
from trainer.quality_model import crops_to_tensor

CROP_SIDE = 112


class LabelledImages:
    """The labelled images of a labels file, whatever holds them, with their 0..100 labels.

    Images come from the datasets the ``trainer labels`` run recorded (identity folders,
    list files, RecordIO: ``trainer.datasets``), or, for a hand-made labels file without
    its ``summary.json``, from the files its ``path`` column names.
    """

    def __init__(self, labels: np.ndarray, source: str, names: list[str], reader: _FileReader | _DatasetReader,
                 ) -> None:
        self.labels = labels
        self.source = source
        self.names = names
        self.reader = reader

    def __len__(self) -> int:
        return len(self.names)

    def read_bytes(self, j: int) -> bytes:
        try:
            return self.reader.read_bytes(j)
        except OSError as exc:
            raise DatasetError(f"cannot read {self.names[j]}: {exc.strerror or exc}") from None

    def read(self, j: int) -> np.ndarray:
        """Image ``j`` as a BGR uint8 aligned crop; DatasetError naming it otherwise."""
        data = np.frombuffer(self.read_bytes(j), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None or image.shape[:2] != (CROP_SIDE, CROP_SIDE):
            raise DatasetError(f"{self.names[j]} is not an aligned 112×112 crop; training reads aligned crops "
                               "(align photos first, e.g. with `trainer samples`-style alignment)")
        return image

    def content_key(self, j: int) -> str:
        """sha256 of the image's bytes: what cached features are found by."""
        return hashlib.sha256(self.read_bytes(j)).hexdigest()


def open_labelled_images(labels_csv: Path) -> LabelledImages:
    """The labelled images of ``labels.csv``, reopened through the datasets its run recorded."""
    labels_csv = Path(labels_csv)
    summary = labels_csv.with_name("summary.json")
    recorded = None
    if labels_csv.name == "labels.csv" and summary.is_file():
        try:
            recorded = json.loads(summary.read_text()).get("data")
        except ValueError:
            recorded = None
    if recorded:
        items = open_labelled(labels_csv.parent)
        dataset, positions = items.dataset, items.positions
        return LabelledImages(items.labels, str(labels_csv), [dataset.path(int(i)) for i in positions],
                              _DatasetReader(dataset, positions))
    labelled = read_labels(labels_csv)
    paths = sorted(labelled)
    return LabelledImages(np.array([labelled[p] for p in paths], np.float32), str(labels_csv), paths,
                          _FileReader(paths))


class _FileReader:
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def read_bytes(self, j: int) -> bytes:
        return Path(self.paths[j]).read_bytes()


class _DatasetReader:
    def __init__(self, dataset: FaceDataset, positions: np.ndarray) -> None:
        self.dataset, self.positions = dataset, positions

    def read_bytes(self, j: int) -> bytes:
        return self.dataset.read_bytes(int(self.positions[j]))


class SampleRandomness:
    """Flips and dropout masks as functions of (seed, epoch, sample index)."""

    def __init__(self, seed: int, flip: bool, dropout: float, features: int) -> None:
        self.seed, self.flip, self.dropout, self.features = seed, flip, dropout, features

    def flips(self, epoch: int, n: int) -> np.ndarray:
        """Which of ``n`` samples are mirrored this epoch (all False without flipping)."""
        if not self.flip:
            return np.zeros(n, bool)
        return np.random.default_rng([self.seed, epoch, 0]).random(n) < 0.5

    def keep(self, epoch: int, index: int) -> torch.Tensor:
        """Sample ``index``'s dropout keep mask for this epoch, scaled by 1 / (1 − p)."""
        if self.dropout <= 0:
            return torch.ones(self.features)
        draw = np.random.default_rng([self.seed, epoch, 1, index]).random(self.features, dtype=np.float32)
        return torch.from_numpy((draw >= self.dropout).astype(np.float32) / (1.0 - self.dropout))


class _EpochSamples(Dataset):
    """Items ``(index, input, keep mask)``; :meth:`start_epoch` sets the epoch's flips."""

    def __init__(self, count: int, randomness: SampleRandomness | None) -> None:
        self.count = count
        self.randomness = randomness
        self.epoch = 0
        self.flipped = np.zeros(count, bool)

    def start_epoch(self, epoch: int) -> None:
        """Set before iterating (a DataLoader's workers copy the dataset when they start)."""
        self.epoch = epoch
        self.flipped = self.randomness.flips(epoch, self.count) if self.randomness else np.zeros(self.count, bool)

    def __len__(self) -> int:
        return self.count

    def _keep(self, index: int) -> torch.Tensor:
        return self.randomness.keep(self.epoch, index) if self.randomness else torch.zeros(0)


class CropSamples(_EpochSamples):
    """Labelled images decoded on demand, mirrored when the epoch's draw says so."""

    def __init__(self, images: LabelledImages, randomness: SampleRandomness | None) -> None:
        super().__init__(len(images), randomness)
        self.images = images

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        crop = self.images.read(index)
        if self.flipped[index]:
            crop = crop[:, ::-1]
        return index, crops_to_tensor(crop[None])[0], self._keep(index)


class CachedSamples(_EpochSamples):
    """Cached features at the cut: the mirrored image's features when the draw says so."""

    def __init__(self, rows: FeatureRows, randomness: SampleRandomness | None) -> None:
        super().__init__(len(rows), randomness)
        self.rows = rows

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        features = self.rows.get(index, int(self.flipped[index]))
        return index, torch.from_numpy(features.astype(np.float32)), self._keep(index)


class FeatureRows(Protocol):
    """What :class:`CachedSamples` reads (``trainer.feature_cache.StoreRows``)."""

    def __len__(self) -> int: ...

    def get(self, index: int, orientation: int) -> np.ndarray: ...
