"""Reading images with clear errors instead of OpenCV's silent ``None``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engines.errors import ImageReadError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def read_image(path: Path | str) -> np.ndarray:
    """Read an image as BGR uint8 (alpha dropped, grey expanded); raise ImageReadError."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode image {path}: not an image or corrupt")
    return image
