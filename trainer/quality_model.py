"""The SDD-FIQA quality regressor: MobileFaceNet backbone + the paper's quality head.

Head (official): Flatten → PReLU → Dropout(0.5) → Linear → 1, on the backbone's feature
map. Input: aligned 112×112 RGB, normalised as SFace does, (x − 127.5) / 128.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainer.mobilefacenet import FEATURE_SHAPE, INPUT_MEAN, INPUT_SCALE, SFaceBackbone

INPUT_STD = 1.0 / INPUT_SCALE  # 128: what the manifest records as the normalisation


class QualityRegressor(nn.Module):
    """Normalised RGB crops → one quality score (trained on 0..100 pseudo-labels)."""

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        features = int(np.prod(FEATURE_SHAPE))
        self.backbone = SFaceBackbone()
        self.head = nn.Sequential(nn.Flatten(), nn.PReLU(features), nn.Dropout(dropout), nn.Linear(features, 1))

    def forward(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(normalised))[:, 0]


def crops_to_tensor(crops_bgr: np.ndarray) -> torch.Tensor:
    """N×112×112×3 BGR uint8 → N×3×112×112 normalised RGB float tensor."""
    rgb = np.ascontiguousarray(np.asarray(crops_bgr)[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    return (torch.from_numpy(rgb) - INPUT_MEAN) * INPUT_SCALE
