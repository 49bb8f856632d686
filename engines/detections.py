"""A frame's faces as one small object of numpy arrays (boxes, scores, landmarks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Faces:
    """Faces found in one frame, in source-frame pixels.

    ``boxes_px``: N×4 (x1, y1, x2, y2); ``scores``: N; ``landmarks_px``: N×5×2 in
    ArcFace order (right eye, left eye, nose, right and left mouth corner of the
    subject, i.e. left-to-right in the image).
    """

    boxes_px: np.ndarray
    scores: np.ndarray
    landmarks_px: np.ndarray

    @staticmethod
    def empty() -> Faces:
        return Faces(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: np.ndarray | list[int]) -> Faces:
        """Subset by index or boolean mask, keeping the three arrays aligned."""
        return Faces(self.boxes_px[index], self.scores[index], self.landmarks_px[index])

    def scaled(self, factor: float) -> Faces:
        """Coordinates multiplied by ``factor`` (detection ran on a resized frame)."""
        return Faces(self.boxes_px * factor, self.scores, self.landmarks_px * factor)

    @property
    def sizes_px(self) -> np.ndarray:
        """Face size: the shorter side of each box."""
        wh = self.boxes_px[:, 2:4] - self.boxes_px[:, 0:2]
        return wh.min(axis=1)
