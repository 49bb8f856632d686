"""What a training step reads: labelled images, or their cached features, and per-sample randomness.

Randomness is a function of (seed, epoch, sample): a sample gets the same horizontal flip
and the same dropout mask whichever process, batch or position it lands in. That is what
makes a run on N processes match a one-process run with the same global batch, and a
resumed run match an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from engines.errors import DatasetError
from trainer.labels_cli import read_labels
from trainer.quality_model import crops_to_tensor

CROP_SIDE = 112


@dataclass
class LabelledImages:
    """The labelled images of a labels file: where each lives and its 0..100 label."""

    paths: list[str]
    labels: np.ndarray  # float32
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, j: int) -> np.ndarray:
        """Image ``j`` as a BGR uint8 aligned crop; DatasetError naming it otherwise."""
        image = cv2.imread(self.paths[j])
        if image is None or image.shape[:2] != (CROP_SIDE, CROP_SIDE):
            raise DatasetError(f"{self.paths[j]} is not an aligned 112×112 crop; run `trainer labels` on "
                               "aligned crops")
        return image

    def content_key(self, j: int) -> str:
        """sha256 of the image's bytes: what cached features are found by."""
        try:
            return hashlib.sha256(Path(self.paths[j]).read_bytes()).hexdigest()
        except OSError as exc:
            raise DatasetError(f"cannot read {self.paths[j]}: {exc.strerror or exc}") from None


def open_labelled_images(labels_csv: Path) -> LabelledImages:
    """The labelled rows of ``labels.csv`` (sorted by path, so the order is reproducible)."""
    labelled = read_labels(labels_csv)
    paths = sorted(labelled)
    return LabelledImages(paths, np.array([labelled[p] for p in paths], np.float32), str(labels_csv))


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


class FeatureRows:
    """Protocol of what :class:`CachedSamples` reads (``trainer.feature_cache.StoreRows``)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, index: int, orientation: int) -> np.ndarray:
        raise NotImplementedError
