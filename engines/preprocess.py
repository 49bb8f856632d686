"""Turn BGR uint8 images into the input tensor a manifest describes."""

from __future__ import annotations

import numpy as np

from engines.manifest import InputSpec


def to_blob(images_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """N×H×W×3 BGR uint8 → N×3×H×W float32 in the model's colour order and scaling."""
    batch = np.asarray(images_bgr)
    if batch.ndim == 3:
        batch = batch[None]
    if spec.colour == "RGB":
        batch = batch[..., ::-1]
    blob = batch.astype(np.float32).transpose(0, 3, 1, 2)
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    if np.any(mean != 0) or np.any(std != 1):
        blob = (blob - mean) / std
    return np.ascontiguousarray(blob)
